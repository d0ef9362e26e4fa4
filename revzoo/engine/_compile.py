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

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._invert import StackCall, run_invert
from ._keywords import KeywordStructure, refuse_mutable_keywords
from ._probe import InvertPlans

__all__ = ["check_range_outside_graph", "invert_outside_graph"]

_EAGER: dict[str, Callable[..., Any]] = {}


def _eager(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, never traced by torch.compile (disabled on first use)."""
    return _EAGER.get(function.__name__) or _EAGER.setdefault(function.__name__, torch.compiler.disable(function))


def _invert(
    plans: InvertPlans, modules: Sequence[nn.Module], call: StackCall, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    refuse_mutable_keywords(call.kwargs, call.context)
    structure = KeywordStructure(call.kwargs, call.context)
    call = dataclasses.replace(call, plans=tuple(plans.for_call(call, modules, x1, x2, structure)))
    outputs = run_invert(call, x1, x2, structure)
    call.arith.check_range()
    return outputs


def _check_range(call: StackCall) -> None:
    call.arith.check_range()


def check_range_outside_graph(call: StackCall) -> None:
    """Raises the call's range error (exact arithmetic), if any; never traced by torch.compile."""
    _eager(_check_range)(call)


def invert_outside_graph(
    plans: InvertPlans, modules: Sequence[nn.Module], call: StackCall, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Returns `run_invert(call, x1, x2)` after planning its blocks (`modules`: the stack's, one per block) and
    checking its range; never traced by torch.compile."""
    return _eager(_invert)(plans, modules, call, x1, x2)
