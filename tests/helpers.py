"""Small modules and comparisons shared by the engine tests."""

from __future__ import annotations

import torch
from torch import nn


class Branch(nn.Module):
    """A residual branch with dropout that uses every keyword it is given, so gradients reach them."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(self.linear(x))
        for value in context.values():
            out = out * torch.sigmoid(value) if value.shape == out.shape else out + value.sum()
        return self.dropout(out)


def pairs(depth: int, dim: int, dropout: float = 0.2) -> list[tuple[nn.Module, nn.Module]]:
    return [(Branch(dim, dropout), Branch(dim, dropout)) for _ in range(depth)]


def grads_of(run, tensors: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor | None]:
    """Returns d(sum of a fixed projection of run())/d tensors, under a fixed seed."""
    torch.manual_seed(seed)
    out = run()
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return list(torch.autograd.grad((out * weight).sum(), tensors, allow_unused=True))


def assert_same_grads(reference, candidate, names, atol: float = 1e-10) -> None:
    """Compares tensor by tensor; a gradient that is missing or all zero fails, so the test can fail."""
    assert len(reference) == len(candidate) == len(names)
    for name, want, got in zip(names, reference, candidate):
        assert want is not None and got is not None, f"{name}: no gradient"
        assert want.abs().max() > 0, f"{name}: zero reference gradient, the comparison would prove nothing"
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
