"""Measuring on a shared CPU machine: peak memory per process, time as ratios of alternated runs.

Peak memory on the CPU: each configuration runs in its own process with MALLOC_MMAP_THRESHOLD_
set, so that freed blocks go back to the system and the resident size tracks live memory; the
peak above the resident size just before the step is the step's activation memory. On CUDA the
caching allocator counts live tensors exactly: the peak of `torch.cuda.max_memory_allocated`
above the memory allocated before the step, in the same process.
Time: configurations alternate (A B C A B C ...) and each round is reported relative to a
reference configuration; the median of those ratios resists the machine's drift.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = ["MMAP_ENV", "alternate_times", "measure_cuda_peak", "measure_peak", "peak_in_subprocess"]

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; peak memory needs Linux")


def measure_peak(step: Callable[[], None]) -> int:
    """Returns the bytes by which the resident peak of `step()` exceeds the resident size before it."""
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    step()
    return (_status_kib("VmHWM") - baseline) * 1024


def measure_cuda_peak(step: Callable[[], None], device: str = "cuda") -> int:
    """Returns the bytes by which the allocated CUDA memory peaks during `step()` above what was allocated before."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - baseline


def peak_in_subprocess(module: str, args: Sequence[str], timeout: float = 900) -> dict:
    """Runs `python -m module *args` with the allocator setting; returns the JSON it prints last."""
    env = {**os.environ, **MMAP_ENV}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"measuring {args} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def alternate_times(
    runs: dict[str, Callable[[], None]], reference: str, rounds: int, progress: Callable[[str], None] | None = None
) -> dict[str, float]:
    """Returns, per configuration, the median over rounds of its time divided by `reference`'s time.

    The order rotates from round to round, so that no configuration always runs after the
    same one (the allocator's and caches' state after a memory-hungry run slows the next).
    """
    for run in runs.values():  # warm up every configuration once
        run()
    names = list(runs)
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds):
        seconds = {}
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            start = time.perf_counter()
            run()
            seconds[name] = time.perf_counter() - start
        for name in runs:
            ratios[name].append(seconds[name] / seconds[reference])
        if progress is not None:
            progress(f"round {round_index + 1}/{rounds}")
    return {name: statistics.median(values) for name, values in ratios.items()}
