"""A reversible 1-D convolutional network for sequences, registered as "conv1d" / "conv1d-rev"."""

from __future__ import annotations

import torch
from torch import nn

import revzoo


class ConvBranch(nn.Module):
    """Pre-norm depthwise convolution then a pointwise MLP; padded positions are zeroed by `mask`."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.mlp(self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2))
        return out if mask is None else out * mask.unsqueeze(-1)


class Conv1dNet(revzoo.ZooModel):
    """Token embedding, a stack of (conv, conv) blocks, and a per-position classifier."""

    def __init__(self, *, form: str, vocab: int, dim: int, depth: int, kernel_size: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        blocks = [(ConvBranch(dim, kernel_size), ConvBranch(dim, kernel_size)) for _ in range(depth)]
        self.stack = revzoo.ReversibleSequence(blocks, routes={"mask": "both"}, form=form)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.stack(self.embed(tokens), mask=mask))


def example_inputs(model: Conv1dNet, generator: torch.Generator) -> tuple[tuple, dict]:
    tokens = torch.randint(0, model.embed.num_embeddings, (2, 16), generator=generator)
    return (tokens,), {"mask": torch.ones(2, 16)}


@revzoo.hookimpl
def register_architectures(register) -> None:
    register(revzoo.ArchSpec(
        name="conv1d",
        builder=Conv1dNet,
        description="reversible 1-D convolutional sequence tagger (example plugin)",
        defaults={"vocab": 32, "dim": 32, "depth": 4, "kernel_size": 5, "classes": 4},
        routes={"mask": "both"},
        example_inputs=example_inputs,
        small={"dim": 64},
    ))
