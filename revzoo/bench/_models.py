"""What `revzoo bench` trains: a transformer stack in each execution, and registered architectures.

Configurations of the transformer stack:
- `sequential`: the classic residual stack, storing activations;
- `reversible`: revzoo's reversible form, differentiated by inversion;
- `checkpoint`: the sequential form with `torch.utils.checkpoint` around each sub-layer;
- `revlib`, `memcnn`: the same sub-layers in those libraries' reversible couplings, where installed
  (they couple the two halves of the features, so their sub-layers are half as wide).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..engine import ReversibleSequence
from ..registry import create, get_architecture

__all__ = ["ARCH_KINDS", "StackConfig", "arch_step", "available_stack_kinds", "stack_step"]

STACK_KINDS = ("sequential", "reversible", "checkpoint", "revlib", "memcnn")
ARCH_KINDS = ("sequential", "reversible", "checkpoint")


@dataclass(frozen=True)
class StackConfig:
    dim: int = 256
    heads: int = 8
    seq: int = 512
    batch: int = 4


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class Checkpointed(nn.Module):
    """Wraps a sub-layer in torch.utils.checkpoint (non-reentrant), for the comparison."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return checkpoint(self.inner, x, use_reentrant=False, **kwargs)


def available_stack_kinds() -> tuple[str, ...]:
    """Returns the stack configurations runnable here: revlib and memcnn only where installed."""
    return tuple(kind for kind in STACK_KINDS if kind not in ("revlib", "memcnn") or importlib.util.find_spec(kind))


def _pairs(config: StackConfig, depth: int, width: int) -> list[tuple[nn.Module, nn.Module]]:
    return [(Attention(width, config.heads), FeedForward(width)) for _ in range(depth)]


def build_stack(config: StackConfig, depth: int, kind: str) -> nn.Module:
    if kind == "revlib":
        import revlib

        layers = [layer for pair in _pairs(config, depth, config.dim // 2) for layer in pair]
        return revlib.ReversibleSequential(*layers, split_dim=-1)
    if kind == "memcnn":
        import memcnn

        return nn.Sequential(*(
            memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Fm=f, Gm=g, split_dim=-1), keep_input=False)
            for f, g in _pairs(config, depth, config.dim // 2)
        ))
    pairs = _pairs(config, depth, config.dim)
    if kind == "checkpoint":
        pairs = [(Checkpointed(f), Checkpointed(g)) for f, g in pairs]
    return ReversibleSequence(pairs, form="reversible" if kind == "reversible" else "sequential")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _training_step(model: nn.Module, args: tuple, kwargs: dict) -> Callable[[], None]:
    def run() -> None:
        outputs = [t for t in _tensors(model(*args, **kwargs)) if t.requires_grad]
        sum(out.float().square().mean() for out in outputs).backward()

    return run


def stack_step(config: StackConfig, depth: int, kind: str) -> tuple[nn.Module, Callable[[], None]]:
    """Returns the stack and one training step of it on a fixed random batch."""
    torch.manual_seed(0)
    stack = build_stack(config, depth, kind)
    x = torch.randn(config.batch, config.seq, config.dim, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()  # revlib and memcnn give parameters no gradient otherwise
    return stack, _training_step(stack, (x,), {})


def arch_step(name: str, depth: int, kind: str) -> tuple[nn.Module, Callable[[], None]]:
    """Returns the architecture's small instance at `depth` in `kind`, and one training step on its example input."""
    spec = get_architecture(name)
    torch.manual_seed(0)
    model = create(name, form="reversible" if kind == "reversible" else "sequential", **{**spec.small, "depth": depth})
    if kind == "checkpoint":
        for stack in (m for m in model.modules() if isinstance(m, ReversibleSequence)):
            for block in stack.blocks:
                block.f, block.g = Checkpointed(block.f), Checkpointed(block.g)
    args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    return model, _training_step(model, args, kwargs)
