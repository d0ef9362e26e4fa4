"""Small blocks in the seeds' calling conventions, shared by tools/fixtures/make_seed_fixtures.py and the tests."""

from __future__ import annotations

import torch
from torch import nn

DIM = 4


class MaskedMix(nn.Module):
    """A DALLE-style f: takes `mask` (routed to f only) and mixes the sequence under it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype) if mask is None else mask[..., None].to(x.dtype)
        pooled = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        return torch.tanh(self.linear(x + pooled))


class FeedForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TupleMix(nn.Module):
    """A Lie-style branch: (coords, values, mask, edges) in, the same tuple with new values out."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)
        self.edge = nn.Linear(1, DIM)

    def forward(self, data: tuple) -> tuple:
        coords, values, mask, edges = data
        out = torch.tanh(self.linear(values) * coords.sum(-1, keepdim=True) + self.edge(edges).mean(2))
        return coords, out * mask[..., None].to(out.dtype), mask, edges


def dalle_layers(depth: int) -> nn.ModuleList:
    return nn.ModuleList(nn.ModuleList([MaskedMix(), FeedForward()]) for _ in range(depth))


def lie_layers(depth: int) -> nn.ModuleList:
    return nn.ModuleList(nn.ModuleList([TupleMix(), TupleMix()]) for _ in range(depth))


def dalle_route(depth: int) -> dict:
    return {"mask": ((True, False),) * depth}
