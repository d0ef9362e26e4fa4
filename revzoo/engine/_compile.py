"""The invert execution under `torch.compile`: run eagerly, as a graph break around the stack.

A compiled forward draws dropout masks from inductor's own random numbers while the recompute in
backward draws them from torch's, so the reconstructed inputs and the gradients would silently be
wrong. Run eagerly, the stack's forward and recompute draw the same masks; the code around the
stack stays compiled. (Measured in tools/bench_compile.py; `execution="autograd"` compiles whole.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._coupling import CouplingRun, run_invert
from ._probe import InvertPlans

__all__ = ["invert_outside_graph"]


@torch.compiler.disable
def invert_outside_graph(
    plans: InvertPlans, modules: Sequence[nn.Module], run: CouplingRun, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `run_invert(run, x1, x2)` after planning its blocks (`modules`: the stack's, one per block);
    never traced by torch.compile."""
    run.plans = plans.for_call(run, modules, x1, x2)
    return run_invert(run, x1, x2)
