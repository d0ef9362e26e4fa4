"""`revzoo bench` and `revzoo cards`, and the measurements they share with tools/bench/.

Peak memory (`measure_peak` in this process, `peak_in_subprocess` in a fresh one with
`MMAP_ENV`, `measure_cuda_peak` on a GPU), step time (`alternate_times`: configurations
alternated in one process, so a slow moment hits them all), and the transformer stack the
benchmark runs at equal work (`StackConfig`, `build_stack`, `training_step`, `Setting`,
`Checkpointed`). May import every other part of revzoo; nothing imports it but the command
line, tools/ and plugins (the dalle demo). Names are imported on first use: the command line starts without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "MMAP_ENV": "._measure",
    "alternate_times": "._measure",
    "measure_cuda_peak": "._measure",
    "measure_peak": "._measure",
    "peak_in_subprocess": "._measure",
    "Checkpointed": "._models",
    "Setting": "._models",
    "StackConfig": "._models",
    "build_stack": "._models",
    "training_step": "._models",
    "Progress": "._progress",
    "benchable_architectures": "._bench",
}

__getattr__, __dir__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._bench import benchable_architectures as benchable_architectures
    from ._measure import MMAP_ENV as MMAP_ENV
    from ._measure import alternate_times as alternate_times
    from ._measure import measure_cuda_peak as measure_cuda_peak
    from ._measure import measure_peak as measure_peak
    from ._measure import peak_in_subprocess as peak_in_subprocess
    from ._models import Checkpointed as Checkpointed
    from ._models import Setting as Setting
    from ._models import StackConfig as StackConfig
    from ._models import build_stack as build_stack
    from ._models import training_step as training_step
    from ._progress import Progress as Progress

__all__ = sorted(_EXPORTS)
