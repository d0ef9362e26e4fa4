"""The invert execution under `torch.compile`: run eagerly, as a graph break around the stack.

A compiled forward draws dropout masks from inductor's own random numbers while the recompute in
backward draws them from torch's, so the reconstructed inputs and the gradients would silently be
wrong. Run eagerly, the stack's forward and recompute draw the same masks; the code around the
stack stays compiled. (Measured in tools/bench/bench_compile.py; `execution="autograd"` compiles whole.)
Exact arithmetic's range check reads its flags on the host (`bool`), which would otherwise be
a graph break with a warning on every compile: it runs outside the graph too.
The graph break is made on the first call, not at import: `torch.compiler.disable` imports
torch._dynamo, a second or more of start-up that `revzoo list` should not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._coupling import CouplingRun, run_invert
from ._keywords import KeywordStructure, refuse_mutable_keywords
from ._probe import InvertPlans

__all__ = ["check_range_outside_graph", "invert_outside_graph"]

_EAGER: dict[str, Callable[..., Any]] = {}


def _eager(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, never traced by torch.compile (disabled on first use)."""
    return _EAGER.get(function.__name__) or _EAGER.setdefault(function.__name__, torch.compiler.disable(function))


def _invert(
    plans: InvertPlans, modules: Sequence[nn.Module], run: CouplingRun, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    refuse_mutable_keywords(run.kwargs, run.context)
    structure = KeywordStructure(run.kwargs, run.context)
    run.plans = plans.for_call(run, modules, x1, x2, structure)
    y1, y2 = run_invert(run, x1, x2, structure)
    run.arith.check_range()
    return y1, y2


def _check_range(run: CouplingRun) -> None:
    run.arith.check_range()


def check_range_outside_graph(run: CouplingRun) -> None:
    """Raises the run's range error (exact arithmetic), if any; never traced by torch.compile."""
    _eager(_check_range)(run)


def invert_outside_graph(
    plans: InvertPlans, modules: Sequence[nn.Module], run: CouplingRun, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `run_invert(run, x1, x2)` after planning its blocks (`modules`: the stack's, one per block) and
    checking its range; never traced by torch.compile."""
    return _eager(_invert)(plans, modules, run, x1, x2)
