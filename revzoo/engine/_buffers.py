"""Buffers a branch changes when called (BatchNorm's running statistics, spectral norm's power iteration).

Recomputing such a branch in backward must see the buffers its forward call saw, and must not
change them a second time: after one step they must be exactly as after one "autograd" step.
Before each forward call the buffers the branch is known to change are copied; the recompute
runs with those copies swapped in (and may change them freely), then the live buffers go back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BufferSlot", "BufferSnapshot", "buffer_slots", "changed_slots"]

BufferSlot = tuple[nn.Module, str]  # the module owning a buffer and the buffer's name in its `_buffers`


def buffer_slots(module: nn.Module) -> list[BufferSlot]:
    """Returns every buffer of `module` and its submodules as `(owner, name)`."""
    return [(owner, name) for owner in module.modules() for name, buf in owner._buffers.items() if buf is not None]


@contextlib.contextmanager
def changed_slots(slots: list[BufferSlot]) -> Iterator[list[BufferSlot]]:
    """Yields a list that, after the body, holds the slots whose buffer was replaced or now holds other values.

    Values are compared, not version counters: kernels such as batch_norm's update running
    statistics without bumping them.
    """
    changed: list[BufferSlot] = []
    before = [(owner._buffers[name], owner._buffers[name].clone()) for owner, name in slots]
    yield changed
    for (owner, name), (buf, value) in zip(slots, before):
        now = owner._buffers[name]
        if now is not buf or not torch.equal(now, value):
            changed.append((owner, name))


@dataclass(frozen=True)
class BufferSnapshot:
    """Copies of some buffers, taken before a forward call."""

    slots: tuple[BufferSlot, ...] = ()
    copies: tuple[torch.Tensor, ...] = ()

    @classmethod
    def take(cls, slots: tuple[BufferSlot, ...]) -> BufferSnapshot:
        """Returns copies of the buffers in `slots` as they are now."""
        if not slots:
            return cls()
        return cls(slots, tuple(owner._buffers[name].detach().clone() for owner, name in slots))

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Runs the body with the copies in place of the live buffers, then puts the live buffers back."""
        live = [owner._buffers[name] for owner, name in self.slots]
        try:
            for (owner, name), copy in zip(self.slots, self.copies):
                owner._buffers[name] = copy
            yield
        finally:
            for (owner, name), buf in zip(self.slots, live):
                owner._buffers[name] = buf
