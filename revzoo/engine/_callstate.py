"""What a forward call ran under, captured so backward can recompute it exactly.

Recomputing a block must see the same dropout masks and the same autocast state as the
forward call did, and must leave the caller's RNG stream untouched. This is the state
`torch.utils.checkpoint` keeps, written once here for every block of a stack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

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
    """RNG states of the CPU and of the CUDA devices in use, and both autocast states."""

    fwd_cpu_rng: torch.Tensor
    fwd_cuda_devices: tuple[int, ...]
    fwd_cuda_rng: tuple[torch.Tensor, ...]
    cpu_autocast: dict
    cuda_autocast: dict

    @classmethod
    def capture(cls, *tensors: torch.Tensor) -> CallState:
        """Returns the state now in force, for a call on `tensors`."""
        devices = _cuda_devices(tensors)
        return cls(
            fwd_cpu_rng=torch.get_rng_state(),
            fwd_cuda_devices=tuple(devices),
            fwd_cuda_rng=tuple(torch.cuda.get_rng_state(d) for d in devices),
            cpu_autocast=_autocast_kwargs("cpu"),
            cuda_autocast=_autocast_kwargs("cuda") if torch.cuda.is_available() else {},
        )

    @contextlib.contextmanager
    def restore(self) -> Iterator[None]:
        """Runs the body under the captured state, with grad enabled, then puts the caller's RNG back."""
        with torch.random.fork_rng(devices=list(self.fwd_cuda_devices)):
            torch.set_rng_state(self.fwd_cpu_rng)
            for device, state in zip(self.fwd_cuda_devices, self.fwd_cuda_rng):
                torch.cuda.set_rng_state(state, device)
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(torch.autocast("cpu", **self.cpu_autocast))
                if self.cuda_autocast:
                    stack.enter_context(torch.autocast("cuda", **self.cuda_autocast))
                yield
