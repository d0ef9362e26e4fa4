"""What each branch needs beyond its own parameters under "invert", found by one probing pass.

The invert execution gives gradients only to tensors its Functions take as inputs, and restores
only the state it knows a branch changes. So before the first forward under "invert" (and again
when a block's modules or their train/eval modes change) the stack runs once on copies, with
grad enabled and nothing observable left changed (RNG, generators and buffers are put back), and
records per branch:

- leaf tensors requiring grad that it uses without owning them or being passed them (a parameter
  of the parent model, a tensor held in a plain attribute), and such parameters frozen at the time
  (unfrozen later, as progressive unfreezing does): they become inputs of its Function;
- the buffers it changes (BatchNorm in train mode, spectral norm's power iteration): copied
  before each forward call so the recompute sees them as the forward did (see `_buffers`).

It refuses, before any work is done, what cannot be recomputed: a branch that changes its input
or a keyword tensor in place (the stream it overwrites is gone), and a branch that uses a tensor
requiring grad computed outside it (its graph belongs to the caller's forward).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ._buffers import BufferSnapshot, buffer_slots, changed_slots
from ._callstate import CallState
from ._invert import BlockPlan, BranchPlan, StackCall, _is_fsdp, _refuse_sharded, checked_output
from ._keywords import KeywordStructure
from ._slots import generators_in, tensors_in

__all__ = ["InvertPlans"]


def _key(block: nn.Module) -> tuple:
    """What a plan depends on: the block's modules, their modes, the parameters each holds (a parameter replaced
    since is another tensor) and how many buffers."""
    return tuple((id(m), m.training, tuple(map(id, m._parameters.values())), len(m._buffers)) for m in block.modules())


def _sequence_marker() -> int:
    """Returns a number below that of every autograd node created from now on in this thread."""
    return (torch.zeros((), requires_grad=True) * 1).grad_fn._sequence_nr()


def _outside_leaves(output: torch.Tensor, known: set[int], marker: int) -> tuple[list[torch.Tensor], bool]:
    """Returns leaves requiring grad that `output` depends on but `known` lacks, and whether it also depends
    on a non-leaf tensor made before the probe (a graph the branch did not build)."""
    hidden: dict[int, torch.Tensor] = {}
    captured = False
    seen: set = set()
    pending = [output.grad_fn]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:  # AccumulateGrad: a leaf
            if id(variable) not in known:
                hidden[id(variable)] = variable
        elif node._sequence_nr() < marker:
            captured = True
        else:
            pending.extend(child for child, _ in node.next_functions)
    return list(hidden.values()), captured


class _ParametersSeen(torch.overrides.TorchFunctionMode):
    """Records every nn.Parameter the torch operations inside it receive, frozen ones too (no graph shows those)."""

    def __init__(self) -> None:
        super().__init__()
        self.parameters: dict[int, nn.Parameter] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tensors_in((args, kwargs)):
            if isinstance(value, nn.Parameter):
                self.parameters[id(value)] = value
        return func(*args, **kwargs)


def _refuse(index: int, name: str, problem: str, fix: str) -> RuntimeError:
    return RuntimeError(f"revzoo: block {index}'s {name} {problem}; execution='invert' cannot recompute it. {fix}")


def _kept(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def _observed(call: StackCall, stream: torch.Tensor) -> Iterator[None]:
    """Grad enabled; RNG, the call's generators and every branch buffer put back afterwards.

    The probe's graphs are never differentiated, so the caller's saved-tensor hooks (offloading,
    memory accounting) do not see them.
    """
    slots = [slot for f, g in call.blocks for branch in (f, g) for slot in buffer_slots(branch)]
    unique = list({(id(owner), name): (owner, name) for owner, name in slots}.values())
    generators = generators_in((call.context, call.kwargs))
    state = CallState.capture(stream, generators=generators)
    with contextlib.ExitStack() as stack:
        stack.enter_context(state.restore())
        for device, kwargs in (("cpu", state.cpu_autocast), ("cuda", state.cuda_autocast)):
            if kwargs:  # casts cached before the probe would look like tensors captured from outside
                stack.enter_context(torch.autocast(device, **{**kwargs, "cache_enabled": False}))
        stack.enter_context(BufferSnapshot.take(tuple(unique)).swapped_in())
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(_kept, _kept))
        yield


def _probe_branch(
    branch: nn.Module, name: str, index: int, known_input: torch.Tensor, kwargs: dict, known: set[int], marker: int
) -> tuple[BranchPlan, torch.Tensor]:
    """Calls `branch` on a copy of its input; returns its plan and its output."""
    given = known_input.clone()  # not a leaf, so an in-place first op runs here as it would in forward
    kwarg_tensors = tensors_in(kwargs)
    versions = [t._version for t in (given, *kwarg_tensors)]
    slots = buffer_slots(branch)
    with changed_slots(slots) as changed, _ParametersSeen() as seen:
        output = branch(given, **kwargs)
    frozen = [p for p in seen.parameters.values() if id(p) not in known and not p.requires_grad]
    if versions != [t._version for t in (given, *kwarg_tensors)]:
        raise _refuse(
            index, name, "changes its input or a keyword tensor in place (an in-place first op such as "
            "nn.ReLU(inplace=True) overwrites the stream)", "Make that op out of place (inplace=False).",
        )
    if not isinstance(output, torch.Tensor) or output.grad_fn is None:
        return BranchPlan(tuple(frozen), tuple(changed)), output
    hidden, captured = _outside_leaves(output, known, marker)
    hidden += frozen  # unfrozen later (progressive unfreezing), they must already be inputs of the Function
    if captured:
        raise _refuse(
            index, name, "uses a tensor requiring grad that was computed outside it and is not one of its "
            "arguments (for example stored on a module by the parent's forward)",
            "Pass that tensor as a keyword argument routed to the branch (routes={name: 'f' | 'g' | 'both'}).",
        )
    return BranchPlan(tuple(hidden), tuple(changed)), output.detach()  # its graph freed: one branch's at a time


def _probe(
    call: StackCall, x1: torch.Tensor, x2: torch.Tensor, needed: Sequence[int], structure: KeywordStructure | None
) -> dict[int, BlockPlan]:
    """Runs the blocks on copies of the streams, as the forward would, and returns the plans of those in `needed`.
    A block that changes a keyword container is refused there (`structure`)."""
    plans: dict[int, BlockPlan] = {}
    arith = copy.deepcopy(call.arith)  # its own copy: the exact arithmetic records range checks per call
    with _observed(call, x2):
        marker = _sequence_marker()
        slot_leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in call.slot_values()]
        given = [leaf.clone() if leaf.requires_grad else leaf for leaf in slot_leaves]
        x1, x2 = (x.detach().clone().requires_grad_() for x in (x1, x2))
        for index, (f, g) in enumerate(call.blocks[: max(needed) + 1]):
            f_kwargs, g_kwargs = call.branch_kwargs(index, given)
            known = {id(p) for branch in (f, g) for p in branch.parameters()}  # what the Function already takes
            known |= {id(t) for t in (x1, x2, *slot_leaves)}
            f_plan, f_out = _probe_branch(f, "f", index, arith.branch_input(x2), f_kwargs, known, marker)
            y1 = arith.combine(index, 0, x1.detach(), checked_output(x1, f_out, index, "f")).detach().requires_grad_()
            g_plan, g_out = _probe_branch(g, "g", index, arith.branch_input(y1), g_kwargs, known | {id(y1)}, marker)
            y2 = arith.combine(index, 1, x2.detach(), checked_output(x2, g_out, index, "g")).detach().requires_grad_()
            plans[index] = BlockPlan((f_plan, g_plan))
            if structure is not None:
                structure.check(f"block {index} (run by the first call's probe)")
            x1, x2 = (y2, y1) if call.swap else (y1, y2)
    return plans


class InvertPlans:
    """The plans of one stack's blocks, one per block and key, found when first needed."""

    def __init__(self) -> None:
        self._plans: dict[tuple[int, tuple], BlockPlan] = {}

    def __reduce__(self) -> tuple:
        return (InvertPlans, ())  # copies and pickles start empty: the keys are ids of the original modules

    def for_call(
        self, call: StackCall, modules: Sequence[nn.Module], x1: torch.Tensor, x2: torch.Tensor,
        structure: KeywordStructure | None = None,
    ) -> list[BlockPlan]:
        """Returns a plan per block of `call`, probing, from the input streams, the blocks whose plan is not known.

        `modules` are the stack's own block modules (holding f, g and any adapter), which key the
        plans: `call.blocks` may be made afresh for each call. Stacks with an FSDP2 branch are not
        probed: FSDP2 must see each branch's forward followed by its backward.
        """
        if any(_is_fsdp(branch) for block in call.blocks for branch in block):
            return [BlockPlan()] * len(call.blocks)
        keys = [(index, _key(module)) for index, module in enumerate(modules)]
        needed = [index for index, key in enumerate(keys) if key not in self._plans or self._plans[key].stale]
        if needed:
            for index in range(len(call.blocks)):
                _refuse_sharded(call.block_parameters(index))  # before running anything on sharded parameters
            for index, plan in _probe(call, x1, x2, needed, structure).items():
                self._plans[keys[index]] = plan
        return [self._plans[key] for key in keys]
