"""The device a model is loaded onto or measured on, checked before any work: one line instead of torch's traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..errors import ConfigError

__all__ = ["check_device"]


def _xpu() -> tuple[bool, int]:
    xpu = getattr(torch, "xpu", None)
    return (False, 0) if xpu is None or not xpu.is_available() else (True, xpu.device_count())


# device type -> (name shown, () -> (available, how many)); looked up at each call, so a test can patch torch
_KINDS: dict[str, tuple[str, Callable[[], tuple[bool, int]]]] = {
    "cpu": ("CPU", lambda: (True, 1)),
    "cuda": ("CUDA", lambda: (torch.cuda.is_available(), torch.cuda.device_count())),
    "mps": ("MPS", lambda: (torch.backends.mps.is_available(), 1)),
    "xpu": ("XPU", _xpu),
}


def _fix(option: str, value: str) -> str:
    return f"{option} {value}" if option.startswith("-") else f"{option}={value!r}"


def check_device(device: str | torch.device, *, kinds: Iterable[str] | None = None,
                 option: str = "device") -> torch.device:
    """Returns `device` as a torch.device, after checking that this machine has it; raises ConfigError otherwise.

    Refused, in one line naming `option` (the parameter or command-line option it came from):
    a string torch does not read as a device (`cpux`), `meta` (which holds no data), a device
    type outside `kinds` (default: cpu, cuda, mps, xpu), a type this machine lacks (cuda
    without a GPU), and an index past its devices (`cuda:3` on a machine with one).

    Example:
        >>> revzoo.check_device("cuda:1", option="--device")  # ConfigError on a machine with fewer GPUs
    """
    allowed = tuple(kinds) if kinds is not None else tuple(_KINDS)
    shown = f"{option} {str(device)!r}"
    names = [kind if kind == "cpu" else f"{kind}[:N]" for kind in allowed]
    usable = " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{shown} is not a device; use {usable}") from None
    if parsed.type == "meta":
        raise ConfigError(f"{shown}: the meta device holds no data; use {usable}")
    if parsed.type not in allowed or parsed.type not in _KINDS:
        raise ConfigError(f"{shown} is not a device revzoo runs on here; use {usable}")
    name, probe = _KINDS[parsed.type]
    available, count = probe()
    if not available:
        raise ConfigError(f"{shown}: {name} is not available on this machine (torch {torch.__version__}); use "
                          f"{_fix(option, 'cpu')}, or run on a machine with a {name} device")
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(f"{shown}: this machine has {count} {name} device(s); use {parsed.type}:0 to "
                          f"{parsed.type}:{count - 1}")
    return parsed
