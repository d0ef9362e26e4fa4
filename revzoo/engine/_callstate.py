"""What a forward call ran under, captured so backward can recompute it exactly.

Recomputing a block must see the same dropout masks and the same autocast state as the
forward call did, and must leave the caller's RNG stream untouched. This is the state
`torch.utils.checkpoint` keeps, written once here for every block of a stack, plus what
a branch call can draw from or change besides the global RNG: the `torch.Generator`s among
its keyword arguments and the buffers it is known to change (see `_buffers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ._buffers import BufferSlot, BufferSnapshot

__all__ = ["CallState"]


def _cuda_devices(tensors: tuple[torch.Tensor, ...]) -> list[int]:
    # Only stash device RNG when CUDA is already initialised: capturing must never start CUDA.
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return sorted({t.device.index for t in tensors if t.is_cuda})


def _autocast_kwargs(device_type: str) -> dict:
    return {
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
        "cache_enabled": torch.is_autocast_cache_enabled(),
    }


@dataclass(frozen=True)
class CallState:
    """RNG states of the CPU, the CUDA devices in use and the call's generators; both autocast states; buffers."""

    fwd_cpu_rng: torch.Tensor
    fwd_cuda_devices: tuple[int, ...]
    fwd_cuda_rng: tuple[torch.Tensor, ...]
    cpu_autocast: dict
    cuda_autocast: dict
    fwd_generators: tuple[tuple[torch.Generator, torch.Tensor], ...] = ()
    fwd_buffers: BufferSnapshot = field(default_factory=BufferSnapshot)

    @classmethod
    def capture(
        cls,
        *tensors: torch.Tensor,
        generators: Sequence[torch.Generator] = (),
        buffers: tuple[BufferSlot, ...] = (),
    ) -> CallState:
        """Returns the state now in force, for a call on `tensors` drawing from `generators` and changing `buffers`."""
        devices = _cuda_devices(tensors)
        return cls(
            fwd_cpu_rng=torch.get_rng_state(),
            fwd_cuda_devices=tuple(devices),
            fwd_cuda_rng=tuple(torch.cuda.get_rng_state(d) for d in devices),
            cpu_autocast=_autocast_kwargs("cpu"),
            cuda_autocast=_autocast_kwargs("cuda") if torch.cuda.is_available() else {},
            fwd_generators=tuple((g, g.get_state()) for g in generators),
            fwd_buffers=BufferSnapshot.take(buffers),
        )

    @contextlib.contextmanager
    def restore(self) -> Iterator[None]:
        """Runs the body under the captured state, with grad enabled, then puts the caller's RNG and buffers back."""
        with torch.random.fork_rng(devices=list(self.fwd_cuda_devices)), contextlib.ExitStack() as stack:
            torch.set_rng_state(self.fwd_cpu_rng)
            for device, state in zip(self.fwd_cuda_devices, self.fwd_cuda_rng):
                torch.cuda.set_rng_state(state, device)
            for generator, state in self.fwd_generators:
                stack.callback(generator.set_state, generator.get_state())
                generator.set_state(state)
            stack.enter_context(self.fwd_buffers.swapped_in())
            stack.enter_context(torch.enable_grad())
            stack.enter_context(torch.autocast("cpu", **self.cpu_autocast))
            if self.cuda_autocast:
                stack.enter_context(torch.autocast("cuda", **self.cuda_autocast))
            yield
