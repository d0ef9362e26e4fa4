"""check_reversible: does a model's inversion reproduce its inputs and its gradients?"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._buffers import BufferSlot
from ._sequence import named_stacks
from ._slots import tensors_in

__all__ = ["BlockReport", "ReversibilityReport", "check_reversible"]


@dataclass(frozen=True)
class BlockReport:
    """One block: how well its inputs were reconstructed and how its gradients agree."""

    stack: str
    block: int
    reconstruction_abs: float
    reconstruction_rel: float
    grad_diff: float
    bitwise: bool = False  # every reconstructed input equal to the forward's, bit for bit


@dataclass(frozen=True)
class ReversibilityReport:
    """Per-block errors, the worst gradient difference anywhere (inputs and all parameters), and buffers.

    `mutated_buffers` names the buffers one call changes (BatchNorm's running statistics, ...);
    `max_buffer_diff` is the largest difference between them after one "invert" and one "autograd" call.
    `repeatable` is False when two calls under the same seed and buffers gave different outputs: the model
    keeps state outside torch's RNG, its buffers and its keyword generators (numpy's RNG, a
    `torch.Generator` held on a module, a counter), which the invert execution's recompute cannot restore.
    """

    blocks: list[BlockReport] = field(default_factory=list)
    max_grad_diff: float = 0.0
    mutated_buffers: tuple[str, ...] = ()
    max_buffer_diff: float = 0.0
    repeatable: bool = True  # two calls with the same seed and buffers gave the same outputs

    @property
    def max_reconstruction_error(self) -> float:
        return _worst(b.reconstruction_abs for b in self.blocks)

    @property
    def bitwise(self) -> bool:
        """Was every block's input reconstructed bit for bit?"""
        return all(b.bitwise for b in self.blocks)

    def __str__(self) -> str:
        header = f"{'stack':<24} {'block':>5} {'recon abs':>10} {'recon rel':>10} {'bitwise':>7} {'grad diff':>10}"
        rows = [
            f"{b.stack or '<root>':<24} {b.block:>5} {b.reconstruction_abs:>10.2e} "
            f"{b.reconstruction_rel:>10.2e} {'yes' if b.bitwise else 'no':>7} {b.grad_diff:>10.2e}"
            for b in self.blocks
        ]
        footer = [f"max gradient difference (inputs and all parameters): {self.max_grad_diff:.2e}"]
        if self.mutated_buffers:
            shown = ", ".join(self.mutated_buffers[:4]) + (", ..." if len(self.mutated_buffers) > 4 else "")
            footer.append(f"buffers changed by a call: {len(self.mutated_buffers)} ({shown})")
            footer.append(f"max buffer difference after one call: {self.max_buffer_diff:.2e}")
        if not self.repeatable:
            footer.append("NOT REPEATABLE: two calls with the same seed and buffers gave different outputs (state "
                          "outside torch's RNG, buffers and keyword generators: numpy's RNG, a torch.Generator on a "
                          "module, a counter); execution='invert' recomputes with that state changed")
        return "\n".join([header, *rows, *footer])


def _outputs(model: nn.Module, inputs: tuple, kwargs: dict, seed: int) -> list[torch.Tensor]:
    """The outputs of one call under `seed` that require grad (all floating ones when grad is off)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        found = list(tensors_in(model(*inputs, **kwargs)))
    return [t for t in found if t.requires_grad or (not torch.is_grad_enabled() and t.is_floating_point())]


def _gradients(model: nn.Module, inputs: tuple, kwargs: dict, seed: int, targets: list[torch.Tensor]
               ) -> tuple[list, list[torch.Tensor]]:
    """Returns the gradients of a fixed random projection of the outputs, and the outputs (detached)."""
    outputs = _outputs(model, inputs, kwargs, seed)
    if not outputs:
        raise ValueError("the model's outputs do not require grad; nothing to check")
    weights = torch.Generator().manual_seed(seed + 1)
    loss = sum((out * torch.randn(out.shape, generator=weights).to(out)).sum() for out in outputs)
    return list(torch.autograd.grad(loss, targets, allow_unused=True)), [out.detach() for out in outputs]


def _same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second))


class _Buffers:
    """Every buffer of a model by name, with what it held when this was made, to compare with and go back to."""

    def __init__(self, model: nn.Module) -> None:
        self.slots: dict[str, BufferSlot] = {
            f"{prefix}.{name}" if prefix else name: (owner, name)
            for prefix, owner in model.named_modules()
            for name, buf in owner._buffers.items()
            if buf is not None
        }
        self.objects = {name: owner._buffers[key] for name, (owner, key) in self.slots.items()}
        self.values = self.now()

    def now(self) -> dict[str, torch.Tensor]:
        return {name: owner._buffers[key].detach().clone() for name, (owner, key) in self.slots.items()}

    def restore(self) -> None:
        """Puts the original buffer objects back, holding their original values."""
        with torch.no_grad():
            for name, (owner, key) in self.slots.items():
                owner._buffers[key] = self.objects[name].copy_(self.values[name])


def _worst(values: Iterable[float]) -> float:
    """Returns the largest of `values` (0 when empty), or NaN if any is NaN: Python's `max` drops NaN."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values, default=0.0)


def _max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return float("inf")
    return (a - b).abs().max().item() if a.numel() else 0.0


def check_reversible(model_or_stack: nn.Module, *inputs: Any, seed: int = 0, **kwargs: Any) -> ReversibilityReport:
    """Returns per-block reconstruction errors and "invert" vs "autograd" gradient differences.

    Runs `model_or_stack(*inputs, **kwargs)` twice under the same seed, once per execution,
    differentiating a fixed random projection of every output that requires grad, each time
    from the buffers the model had. The model's executions, buffers and its parameters' `.grad`
    are left as they were.

    Example:
        >>> stack = ReversibleSequence([(nn.Linear(4, 4), nn.Linear(4, 4))]).double()
        >>> check_reversible(stack, torch.randn(2, 4, dtype=torch.float64)).max_grad_diff < 1e-10
        True
    """
    stacks = named_stacks(model_or_stack)
    if not stacks:
        raise TypeError(f"{type(model_or_stack).__name__} contains no revzoo.ReversibleSequence")
    params = [p for p in model_or_stack.parameters() if p.requires_grad]
    targets = params + [t for t in tensors_in((inputs, kwargs)) if t.requires_grad]
    saved = {stack: stack.execution for stack in stacks.values()}
    buffers = _Buffers(model_or_stack)
    try:
        for stack in stacks.values():
            stack.execution = "autograd"
        reference, outputs = _gradients(model_or_stack, inputs, kwargs, seed, targets)
        reference_buffers = buffers.now()
        buffers.restore()
        with torch.no_grad():  # the same call again: it must give the same outputs, or the recompute cannot
            repeatable = _same(outputs, _outputs(model_or_stack, inputs, kwargs, seed))
        buffers.restore()
        with contextlib.ExitStack() as recording:
            traces = {name: recording.enter_context(stack.recording_inversions()) for name, stack in stacks.items()}
            for stack in stacks.values():
                stack.execution = "invert"
            inverted = _gradients(model_or_stack, inputs, kwargs, seed, targets)[0]
        inverted_buffers = buffers.now()
    finally:
        buffers.restore()
        for stack, execution in saved.items():
            stack.execution = execution
    mutated = tuple(name for name, value in reference_buffers.items() if not torch.equal(value, buffers.values[name]))
    buffer_diff = _worst(_max_diff(inverted_buffers[name].double(), reference_buffers[name].double()) for name in mutated)
    diffs = {id(t): _max_diff(a, b) for t, a, b in zip(targets, reference, inverted)}
    blocks = []
    for name, stack in stacks.items():
        for index, block in enumerate(stack.blocks):
            recon_abs = recon_rel = 0.0
            bitwise = True
            for trace in traces[name]:
                if index not in trace.reconstructed:
                    continue
                for original, rebuilt in zip(trace.inputs[index], trace.reconstructed[index]):
                    error = (original - rebuilt).abs().max().item()
                    recon_abs = _worst((recon_abs, error))
                    recon_rel = _worst((recon_rel, error / max(original.abs().max().item(), 1e-30)))
                    bitwise = bitwise and torch.equal(original, rebuilt)
            grad_diff = _worst(diffs[id(p)] for p in block.parameters() if id(p) in diffs)
            blocks.append(BlockReport(name, index, recon_abs, recon_rel, grad_diff, bitwise))
    return ReversibilityReport(blocks, _worst(diffs.values()), mutated, buffer_diff, repeatable)
