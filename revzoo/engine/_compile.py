"""The invert execution under `torch.compile`: run eagerly, as a graph break around the stack.

A compiled forward draws dropout masks from inductor's own random numbers while the recompute in
backward draws them from torch's, so the reconstructed inputs and the gradients would silently be
wrong. Run eagerly, the stack's forward and recompute draw the same masks; the code around the
stack stays compiled. (Measured in tools/bench_compile.py; `execution="autograd"` compiles whole.)
The graph break is made on the first call, not at import: `torch.compiler.disable` imports
torch._dynamo, a second or more of start-up that `revzoo list` should not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._coupling import CouplingRun, run_invert
from ._probe import InvertPlans

__all__ = ["invert_outside_graph"]


def _invert(
    plans: InvertPlans, modules: Sequence[nn.Module], run: CouplingRun, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    run.plans = plans.for_call(run, modules, x1, x2)
    return run_invert(run, x1, x2)


_EAGER: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}


def invert_outside_graph(
    plans: InvertPlans, modules: Sequence[nn.Module], run: CouplingRun, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `run_invert(run, x1, x2)` after planning its blocks (`modules`: the stack's, one per block);
    never traced by torch.compile."""
    eager = _EAGER.get("invert") or _EAGER.setdefault("invert", torch.compiler.disable(_invert))
    return eager(plans, modules, run, x1, x2)
