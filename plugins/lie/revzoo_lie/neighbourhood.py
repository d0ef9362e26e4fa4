"""Local neighbourhoods of lifted elements under the group distance.

Each query element attends to ``k = min(nbhd, elements)`` keys. They are drawn from a ball holding
its ``max(nbhd, ceil(fill * valid elements))`` nearest valid elements: when the ball is no larger
than ``nbhd`` the neighbourhood is exactly the ``nbhd`` nearest elements, otherwise a uniform random
subset of the ball (a Monte Carlo estimate of the integral over the ball, as in LieConv).

Unlike lie-transformer-pytorch, the ball is not a radius buffer adapted during training: it is
a rank computed from the data, so nothing is mutated in forward, and the random choice comes from
``noise`` drawn by the caller, so the same noise gives the same neighbourhood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .groups import LieGroup

# Pairs whose coordinates are computed at once when measuring all distances (bounds the temporaries).
_PAIRS_PER_SLICE = 1 << 16


@dataclass(frozen=True)
class Neighbourhood:
    """Which keys each query element attends to.

    Attributes:
        index: key element indices ``(batch, elements, k)``.
        valid: ``(batch, elements, k)``, False where the slot holds no valid neighbour (padding).
        pairs: pair coordinates ``log(query^-1 key)`` ``(batch, elements, k, pair_dim)``, differentiable.
    """

    index: torch.Tensor
    valid: torch.Tensor
    pairs: torch.Tensor


def gather_elements(elements: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Returns ``elements[b, index[b, i, j]]`` of shape ``(batch, queries, k, features)``."""
    batch, queries, k = index.shape
    flat = index.reshape(batch, queries * k, 1).expand(-1, -1, elements.shape[-1])
    return elements.gather(1, flat).reshape(batch, queries, k, elements.shape[-1])


def pairwise_distance(group: LieGroup, elements: torch.Tensor) -> torch.Tensor:
    """Returns the group distances ``(batch, elements, elements)`` of all pairs.

    Computed in slices of queries: the pair maths holds a few dozen numbers per pair in flight,
    which for all pairs at once would dwarf the ``(batch, elements, elements)`` result.
    """
    batch, count, _ = elements.shape
    rows = max(1, _PAIRS_PER_SLICE // max(1, batch * count))
    keys = elements[:, None, :, :]
    slices = [
        group.distance(group.pair_coordinates(elements[:, start : start + rows, None, :], keys))
        for start in range(0, count, rows)
    ]
    return torch.cat(slices, dim=1)


def find_neighbourhood(
    group: LieGroup,
    elements: torch.Tensor,
    mask: torch.Tensor,
    *,
    nbhd: int,
    fill: float,
    noise: torch.Tensor,
) -> Neighbourhood:
    """Returns the neighbourhood of every element.

    Args:
        group: the group the elements belong to.
        elements: lifted elements ``(batch, elements, element_size)``.
        mask: valid elements ``(batch, elements)`` (bool).
        nbhd: keys per query.
        fill: fraction of the valid elements the sampling ball covers (at least ``nbhd`` of them).
        noise: uniform [0, 1) numbers ``(batch, elements, elements)`` choosing within the ball.
    """
    batch, count = mask.shape
    k = min(nbhd, count)
    with torch.no_grad():  # the choice is discrete; gradients flow through the gathered pairs below
        distance = pairwise_distance(group, elements).masked_fill(~mask[:, None, :], math.inf)
        order = distance.argsort(dim=-1, stable=True)
        rank = torch.empty_like(order).scatter_(
            -1, order, torch.arange(count, device=order.device).expand(batch, count, count)
        )
        valid_count = mask.sum(-1)
        ball_size = torch.maximum((fill * valid_count.float()).ceil().long(), torch.full_like(valid_count, k))
        in_ball = (rank < ball_size[:, None, None]) & mask[:, None, :]
        score = in_ball.to(noise.dtype) + noise
        index = score.topk(k, dim=-1).indices
        valid = in_ball.gather(-1, index)
    query = elements[:, :, None, :]
    pairs = group.pair_coordinates(query, gather_elements(elements, index))
    return Neighbourhood(index=index, valid=valid, pairs=pairs)
