"""LieTransformer (Hutchinson et al., "LieTransformer: Equivariant self-attention for Lie Groups",
ICML 2021) for point clouds, on a revzoo ReversibleSequence.

The data flowing through the stack is ``(coords, values, mask, edges)``: ``values`` (one feature
vector per lifted element) is the reversible stream; ``coords`` (neighbour pair coordinates),
``mask`` and ``edges`` (neighbour edge features) are context, the same in every block. All
randomness (lift samples, choice within the neighbourhood ball) is drawn once before the stack, so
a backward recompute sees the same samples and a seeded generator reproduces a call.
"""

from __future__ import annotations

import torch
from torch import nn

import revzoo

from .branches import AttentionBranch, FeedForward, LieSelfAttention
from .groups import group_from_name
from .neighbourhood import Neighbourhood, find_neighbourhood
from .rotations import random_rotations

STREAM_LAYOUT = revzoo.StreamLayout(stream="values", fields=("coords", "values", "mask", "edges"))
ROUTES = {"coords": "f", "mask": "f", "edges": "f", "neighbour_index": "f", "neighbour_mask": "f"}


class LieTransformer(revzoo.ZooModel):
    """Group-equivariant transformer over lifted point clouds (interface of lie-transformer-pytorch 0.0.17).

    Args:
        dim: width of the element features.
        num_tokens: if set, ``feats`` are token ids embedded to ``dim``; else ``feats`` are vectors of size ``dim``.
        num_edge_types: if set, ``edges`` are type ids ``(batch, n, n)`` embedded to ``edge_dim``.
        edge_dim: size of the edge features (raw ``(batch, n, n, edge_dim)`` edges when ``num_edge_types`` is None).
        heads, dim_head: attention heads and their width.
        depth: number of (attention, feed-forward) blocks.
        dim_out: output width (default ``dim``).
        nbhd: neighbours each element attends to.
        mean: pool by the mean over valid points (else the sum).
        liftsamples: stabiliser samples per point (1 for T3).
        fill: fraction of the valid elements the neighbourhood ball covers (``nbhd`` are drawn from it).
        group: "SE3", "SO3" or "T3".
        ff_mult: hidden width multiplier of the feed-forward branch.
        form: "reversible" or "sequential".
    """

    def __init__(
        self,
        *,
        dim: int,
        num_tokens: int | None = None,
        num_edge_types: int | None = None,
        edge_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        depth: int = 2,
        dim_out: int | None = None,
        nbhd: int = 128,
        mean: bool = True,
        liftsamples: int = 4,
        fill: float = 0.25,
        group: str = "SE3",
        ff_mult: int = 4,
        form: str = "reversible",
    ) -> None:
        super().__init__()
        self.group = group_from_name(group)
        self.dim = dim
        self.edge_dim = edge_dim or 0
        self.nbhd = nbhd
        self.fill = fill
        self.mean = mean
        self.liftsamples = liftsamples
        self.token_emb = nn.Embedding(num_tokens, dim) if num_tokens is not None else None
        self.edge_emb = nn.Embedding(num_edge_types, self.edge_dim) if num_edge_types is not None else None
        blocks = []
        for _ in range(depth):
            attention = LieSelfAttention(
                dim, heads=heads, dim_head=dim_head, pair_dim=self.group.pair_dim, edge_dim=self.edge_dim
            )
            blocks.append((AttentionBranch(dim, attention), FeedForward(dim, mult=ff_mult)))
        self.stack = revzoo.ReversibleSequence(blocks, routes=ROUTES, layout=STREAM_LAYOUT, form=form)
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim_out if dim_out is not None else dim)

    def sample_rotations(
        self, batch: int, points: int, *, generator: torch.Generator | None = None, like: torch.Tensor
    ) -> torch.Tensor:
        """Returns uniform lift samples ``(batch, points, liftsamples, 3, 3)`` in ``like``'s dtype and device."""
        return random_rotations((batch, points, self.liftsamples), generator=generator, dtype=like.dtype, device=like.device)

    def forward(
        self,
        feats: torch.Tensor,
        coors: torch.Tensor,
        edges: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_pooled: bool = False,
        rotations: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Returns per-point outputs ``(batch, n, dim_out)`` (zero at padded points) or pooled ``(batch, dim_out)``.

        Args:
            feats: token ids ``(batch, n)`` or features ``(batch, n, dim)``.
            coors: points ``(batch, n, 3)``.
            edges: edge type ids ``(batch, n, n)`` or features ``(batch, n, n, edge_dim)``; None without edges.
            mask: valid points ``(batch, n)`` (bool); None means all valid.
            return_pooled: pool over the valid points (mean or sum, per ``mean``).
            rotations: lift samples ``(batch, n, liftsamples, 3, 3)``; drawn from ``generator`` if None.
                Transform them with the cloud (``R @ r``) for exact equivariance.
            generator: source of the lift samples and of the neighbourhood choice (torch's global RNG if None).
        """
        if coors.ndim != 3 or coors.shape[-1] != 3:
            raise ValueError(f"coors must have shape (batch, points, 3), got {tuple(coors.shape)}")
        batch, points = coors.shape[:2]
        values = self._embed_features(feats)
        if values.shape[:2] != (batch, points):
            raise ValueError(f"feats describe {tuple(values.shape[:2])} (batch, points) but coors {(batch, points)}")
        mask = self._check_mask(mask, batch, points, coors.device)
        edge_features = self._embed_edges(edges, batch, points)
        samples = self.liftsamples if self.group.has_stabiliser else 1
        rotations = self._lift_samples(rotations, coors, generator)
        count = points * samples
        element_mask = mask.repeat_interleave(samples, dim=1)
        # drawn here, before the stack, so that backward's recompute sees the same neighbourhoods
        noise = torch.rand((batch, count, count), generator=generator, dtype=coors.dtype, device=coors.device)
        # group maths (matrix logs, distance ranks) in at least float32, whatever autocast or the input says
        geometry = torch.promote_types(coors.dtype, torch.float32)
        with torch.autocast(coors.device.type, enabled=False):
            elements = self.group.lift(coors.to(geometry), None if rotations is None else rotations.to(geometry))
            neighbourhood = find_neighbourhood(
                self.group, elements, element_mask, nbhd=self.nbhd, fill=self.fill, noise=noise.to(geometry)
            )
        data = (
            neighbourhood.pairs.to(coors.dtype),
            values.repeat_interleave(samples, dim=1),
            element_mask,
            _neighbour_edges(edge_features, neighbourhood, samples),
        )
        _, values, _, _ = self.stack(data, neighbour_index=neighbourhood.index, neighbour_mask=neighbourhood.valid)
        out = self.head(self.head_norm(values)).unflatten(1, (points, samples)).mean(dim=2)
        out = out.masked_fill(~mask[..., None], 0.0)
        if not return_pooled:
            return out
        pooled = out.sum(dim=1)
        if self.mean:
            pooled = pooled / mask.sum(dim=1, keepdim=True).clamp_min(1).to(pooled.dtype)
        return pooled

    def _lift_samples(
        self, rotations: torch.Tensor | None, coors: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Returns the caller's stabiliser samples (checked) or fresh ones; None for T3, which has no stabiliser."""
        if not self.group.has_stabiliser:
            return None
        batch, points = coors.shape[:2]
        if rotations is None:
            return self.sample_rotations(batch, points, generator=generator, like=coors)
        expected = (batch, points, self.liftsamples, 3, 3)
        if rotations.shape != expected:
            raise ValueError(
                f"rotations must have shape {expected} (batch, points, liftsamples, 3, 3), got {tuple(rotations.shape)}"
            )
        return rotations

    def _embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        if self.token_emb is not None:
            if feats.dtype not in (torch.int32, torch.int64):
                raise TypeError(f"this model embeds tokens (num_tokens set): feats must be integer ids, got {feats.dtype}")
            return self.token_emb(feats)
        if feats.shape[-1] != self.dim:
            raise ValueError(f"feats must have last dimension dim={self.dim}, got shape {tuple(feats.shape)}")
        return feats

    @staticmethod
    def _check_mask(mask: torch.Tensor | None, batch: int, points: int, device: torch.device) -> torch.Tensor:
        if mask is None:
            return torch.ones(batch, points, dtype=torch.bool, device=device)
        if mask.shape != (batch, points):
            raise ValueError(f"mask must have shape {(batch, points)}, got {tuple(mask.shape)}")
        return mask.bool()

    def _embed_edges(self, edges: torch.Tensor | None, batch: int, points: int) -> torch.Tensor | None:
        if self.edge_dim == 0:
            if edges is not None:
                raise ValueError(
                    "edges were given but the model has no edge_dim; build it with edge_dim (and num_edge_types for ids)"
                )
            return None
        if edges is None:
            expected = (batch, points, points) if self.edge_emb is not None else (batch, points, points, self.edge_dim)
            raise ValueError(f"this model uses edges (edge_dim={self.edge_dim}): pass edges of shape {expected}")
        if self.edge_emb is not None:
            if edges.shape != (batch, points, points):
                raise ValueError(f"edge type ids must have shape {(batch, points, points)}, got {tuple(edges.shape)}")
            return self.edge_emb(edges)
        if edges.shape != (batch, points, points, self.edge_dim):
            raise ValueError(f"edges must have shape {(batch, points, points, self.edge_dim)}, got {tuple(edges.shape)}")
        return edges


def _neighbour_edges(edges: torch.Tensor | None, neighbourhood: Neighbourhood, samples: int) -> torch.Tensor | None:
    """Returns the edge features of each (element, neighbour) pair, read from the points they lift."""
    if edges is None:
        return None
    batch, points, _, edge_dim = edges.shape
    index = neighbourhood.index
    count, k = index.shape[1:]
    query_point = torch.arange(count, device=index.device)[None, :, None] // samples
    flat_index = (query_point * points + index // samples).reshape(batch, count * k, 1).expand(-1, -1, edge_dim)
    return edges.reshape(batch, points * points, edge_dim).gather(1, flat_index).reshape(batch, count, k, edge_dim)
