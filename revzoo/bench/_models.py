"""What `revzoo bench` trains: a transformer stack in each execution, and registered architectures.

Configurations of the transformer stack, all built from the same blocks `(f, g)`:
- `sequential`: the classic residual stack, storing activations;
- `reversible`: revzoo's reversible form, differentiated by inversion;
- `checkpoint`: the sequential form with `torch.utils.checkpoint` around each sub-layer;
- `revlib`, `memcnn`: the reversible form in those libraries' couplings, where installed. They
  couple the two halves of the features, so they are given `[x, x]` and their two output halves
  are averaged: every sub-layer runs at full width and they compute revzoo's reversible function
  exactly, so every library does the same arithmetic (equal work).
`gradient_difference` checks each configuration against plain autograd of the function it computes.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..engine import ReversibleSequence, tensors_in
from ..registry import create, get_architecture

__all__ = [
    "ARCH_KINDS",
    "STACK_FUNCTION",
    "Setting",
    "StackConfig",
    "arch_step",
    "available_stack_kinds",
    "build_stack",
    "gradient_difference",
    "reference_output",
    "stack_step",
    "training_step",
]

STACK_KINDS = ("sequential", "reversible", "checkpoint", "revlib", "memcnn")
STACK_FUNCTION = {"sequential": "sequential", "checkpoint": "sequential", "reversible": "reversible",
                  "revlib": "reversible", "memcnn": "reversible"}  # the function each configuration computes
ARCH_KINDS = ("sequential", "reversible", "checkpoint")

Pairs = list[tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class StackConfig:
    dim: int = 256
    heads: int = 8
    seq: int = 512
    batch: int = 4


@dataclass(frozen=True)
class Setting:
    """Where a step runs: the device, and whether under bf16 autocast (the mixed precision GPUs train in)."""

    device: str = "cpu"
    bf16: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def synchronize(self) -> None:
        """Waits for the device's queued work, so that a step's end is its end on the host's clock."""
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        device = self.device
        if torch.device(device).type == "cuda" and torch.cuda.is_available():
            device += f" ({torch.cuda.get_device_name(device)})"
        return f"{device}, {'bf16 autocast' if self.bf16 else 'float32'}"


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


class DoubledFeatures(nn.Module):
    """Runs a coupling that splits the features into two streams on `[x, x]` and returns the mean of its two
    output halves: with sub-layers at full width, that is revzoo's reversible function (streams `(x, x)`,
    output `(y1 + y2) / 2`), so the library does exactly revzoo's arithmetic."""

    def __init__(self, coupled: nn.Module) -> None:
        super().__init__()
        self.coupled = coupled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1, y2 = self.coupled(torch.cat([x, x], dim=-1)).chunk(2, dim=-1)
        return (y1 + y2) / 2


def available_stack_kinds() -> tuple[str, ...]:
    """Returns the stack configurations runnable here: revlib and memcnn only where installed."""
    return tuple(kind for kind in STACK_KINDS if kind not in ("revlib", "memcnn") or importlib.util.find_spec(kind))


def build_stack(config: StackConfig, depth: int, kind: str) -> tuple[nn.Module, Pairs]:
    """Returns the stack of `kind` and its blocks `(f, g)`: the model's own sub-modules, at full width in every kind."""
    pairs = [(Attention(config.dim, config.heads), FeedForward(config.dim)) for _ in range(depth)]
    if kind == "revlib":
        import revlib

        coupled = revlib.ReversibleSequential(*(layer for pair in pairs for layer in pair), split_dim=-1)
        return DoubledFeatures(coupled), pairs
    if kind == "memcnn":
        import memcnn

        coupled = nn.Sequential(*(
            memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Fm=f, Gm=g, split_dim=-1), keep_input=False)
            for f, g in pairs
        ))
        return DoubledFeatures(coupled), pairs
    if kind == "checkpoint":
        return ReversibleSequence([(Checkpointed(f), Checkpointed(g)) for f, g in pairs], form="sequential"), pairs
    return ReversibleSequence(pairs, form=STACK_FUNCTION[kind]), pairs


def reference_output(pairs: Pairs, form: str, x: torch.Tensor) -> torch.Tensor:
    """Returns the function of `form` over `pairs` through plain autograd: what every configuration is checked against."""
    if form == "sequential":
        for f, g in pairs:
            x = x + f(x)
            x = x + g(x)
        return x
    x1 = x2 = x
    for f, g in pairs:
        x1 = x1 + f(x2)
        x2 = x2 + g(x1)
    return (x1 + x2) / 2


def gradient_difference(config: StackConfig, depth: int, kind: str, device: str = "cpu", seq: int = 16) -> float:
    """Returns the largest difference between `kind`'s gradients and plain autograd's of the same function.

    Float64, the configuration's blocks at `depth` on a short sequence (the arithmetic per token is the
    benchmark's). The gradients of the input and of every parameter are compared, each difference relative
    to the largest magnitude of that reference gradient; a gradient missing on either side counts as infinite.
    """
    torch.manual_seed(0)
    model, pairs = build_stack(config, depth, kind)
    model.to(device=device, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, seq, config.dim, generator=generator, dtype=torch.float64).to(device).requires_grad_()
    weight = torch.randn(1, seq, config.dim, generator=generator, dtype=torch.float64).to(device)
    leaves = [x, *model.parameters()]

    def grads(run: Callable[[], torch.Tensor]) -> list[torch.Tensor | None]:
        for leaf in leaves:
            leaf.grad = None
        (run() * weight).sum().backward()  # .grad, not autograd.grad: revlib fills parameter gradients as a side effect
        return [leaf.grad for leaf in leaves]

    got = grads(lambda: model(x))
    want = grads(lambda: reference_output(pairs, STACK_FUNCTION[kind], x))
    worst = 0.0
    for reference, candidate in zip(want, got):
        if reference is None or candidate is None:
            return float("inf")
        scale = reference.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        worst = max(worst, ((candidate - reference).abs().max() / scale).item())
    return worst


def to_device(value: Any, device: str) -> Any:
    """Returns `value` with every tensor inside nested tuples, lists and dicts moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def training_step(model: nn.Module, args: tuple, kwargs: dict, setting: Setting) -> Callable[[], None]:
    """Returns one training step of `model` on these inputs: forward under the setting's autocast, the mean square
    of every output that requires grad as the loss, backward, and a wait for the device."""

    def run() -> None:
        with setting.autocast():
            outputs = [t for t in tensors_in(model(*args, **kwargs)) if t.requires_grad]
            loss = sum(out.float().square().mean() for out in outputs)
        loss.backward()
        setting.synchronize()

    return run


def stack_step(
    config: StackConfig, depth: int, kind: str, setting: Setting | None = None
) -> tuple[nn.Module, Callable[[], None]]:
    """Returns the stack on the setting's device (default: CPU, float32) and one training step on a fixed batch."""
    setting = setting or Setting()
    torch.manual_seed(0)
    stack = build_stack(config, depth, kind)[0].to(setting.device)
    x = torch.randn(config.batch, config.seq, config.dim, generator=torch.Generator().manual_seed(0))
    x = x.to(setting.device).requires_grad_()  # revlib and memcnn give parameters no gradient otherwise
    return stack, training_step(stack, (x,), {}, setting)


def arch_step(
    name: str, depth: int, kind: str, setting: Setting | None = None
) -> tuple[nn.Module, Callable[[], None]]:
    """Returns the architecture's small instance at `depth` in `kind`, and one training step on its example input."""
    setting = setting or Setting()
    spec = get_architecture(name)
    torch.manual_seed(0)
    model = create(name, form="reversible" if kind == "reversible" else "sequential", **{**spec.small, "depth": depth})
    if kind == "checkpoint":
        for stack in (m for m in model.modules() if isinstance(m, ReversibleSequence)):
            for block in stack.blocks:
                block.f, block.g = Checkpointed(block.f), Checkpointed(block.g)
    model.to(setting.device)
    args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    return model, training_step(model, to_device(args, setting.device), to_device(kwargs, setting.device), setting)
