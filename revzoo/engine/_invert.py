"""The reversible coupling as a chain of autograd Functions that store no block activations.

Each block is one Function. Its forward runs without building a graph and keeps nothing
but the call's RNG and autocast state; only the last block keeps its two outputs. In
backward the blocks run in reverse, each reading its outputs from the call's shared `Progress`,
recomputing its inputs from them (`x2 = (y2 - g(y1)) / β`, `x1 = (y1 - f(x2)) / λ`) under the
state its forward ran under, and leaving those inputs for the block before it. How a branch output
joins a stream and leaves it again is the run's arithmetic (`_coupling`: floats, or exact fixed point).

Every tensor that gradients must reach (the streams, context and routed keyword tensors,
the block's parameters) is an input of the block's Function and receives its gradient as
an output of `backward`, so the autograd engine accumulates parameter gradients as it
does for any layer: once per backward even for modules shared by several blocks, as
soon as a block is done (DistributedDataParallel's bucket hooks fire during backward),
and never more than one block's parameter gradients held at once. The exception is a
branch under FSDP2's `fully_shard`: FSDP2 unshards it for the recompute and reduce-scatters
from its own hooks, so that branch is differentiated by accumulation instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ._buffers import BufferSlot
from ._callstate import CallState
from ._coupling import ExactArithmetic, FloatArithmetic
from ._keywords import KeywordStructure
from ._routes import RouteTable
from ._slots import generators_in, tensors_in, with_tensors

__all__ = ["BlockPlan", "BranchPlan", "CallTrace", "StackCall", "WholeBlock", "checked_output", "run_invert"]


class WholeBlock(nn.Module):
    """A block's two branches as one residual function, `x + f(x)` then `+ g(...)`: the `F` of a block that
    couples with an adapter (preserving conversion). Keyword arguments arrive prefixed `f.` or `g.`."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        f_kwargs = {name[2:]: value for name, value in kwargs.items() if name.startswith("f.")}
        g_kwargs = {name[2:]: value for name, value in kwargs.items() if name.startswith("g.")}
        x = x + self.f(x, **f_kwargs)
        return x + self.g(x, **g_kwargs)


@dataclass
class CallTrace:
    """What a recorded call (`ReversibleSequence.recording_inversions`) saw: each block's input streams in
    forward and the streams its backward reconstructed from the outputs, by block index."""

    inputs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    reconstructed: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class BranchPlan:
    """What one branch needs under "invert" (found by `_probe`): the tensors it needs gradients for besides its
    parameters, and the buffers it changes."""

    hidden: tuple[torch.Tensor, ...] = ()
    buffers: tuple[BufferSlot, ...] = ()


@dataclass
class BlockPlan:
    """The plans of a block's two branches, `f` then `g`. `stale` is set when a backward found a branch using
    a tensor requiring grad that the plan lacks (a parameter used only on some calls): the next call probes again."""

    branches: tuple[BranchPlan, BranchPlan] = (BranchPlan(), BranchPlan())
    stale: bool = field(default=False, compare=False)

    def hidden(self) -> list[torch.Tensor]:
        """Returns the leaves either branch uses without owning them, each once."""
        return list({id(t): t for branch in self.branches for t in branch.hidden}.values())


@dataclass(frozen=True)
class StackCall:
    """What one call of a stack is: its blocks, routes, keyword data and arithmetic, and the plans it runs with."""

    blocks: Sequence[tuple[nn.Module, nn.Module]]
    routes: RouteTable
    kwargs: Mapping[str, Any]
    context: Mapping[str, Any]
    arith: FloatArithmetic | ExactArithmetic
    swap: bool = False
    whole_blocks: bool = False  # blocks are (WholeBlock, adapter): F's kwargs are f's and g's, prefixed
    plans: tuple[BlockPlan, ...] = ()  # per block, from `_probe`; empty when not planned
    taps: frozenset[int] = frozenset()  # blocks whose outputs leave the chain (intermediates): kept for backward
    trace: CallTrace | None = None  # recorded when the stack is recording inversions

    def slot_values(self) -> list[torch.Tensor]:
        """Returns every tensor in the call's context and kwargs, also inside lists and dicts, in a fixed order."""
        return tensors_in((self.context, self.kwargs))

    def branch_kwargs(self, index: int, replaced: list[torch.Tensor] | None = None) -> tuple[dict, dict]:
        """Returns the keyword arguments of `f` and `g` in block `index`, with the slot tensors `replaced`."""
        context, kwargs = self.context, self.kwargs
        if replaced is not None:
            context, kwargs = with_tensors((context, kwargs), iter(replaced))
        f_kwargs, g_kwargs = self.routes.split(index, kwargs, context)
        if self.whole_blocks:
            return {**{f"f.{k}": v for k, v in f_kwargs.items()}, **{f"g.{k}": v for k, v in g_kwargs.items()}}, {}
        return f_kwargs, g_kwargs

    def block_parameters(self, index: int) -> list[torch.Tensor]:
        """Returns the parameters of block `index` whose gradients the block's Function returns.

        Each appears once, even when `f` and `g` share modules. A branch under FSDP2's
        `fully_shard` is left out: FSDP2 collects its gradients itself (see `_undo_sharded`).
        Leaves the branches use without owning them (found by `_probe`) come last.
        """
        f, g = self.blocks[index]
        params = {id(p): p for module in (f, g) if not _is_fsdp(module) for p in module.parameters()}
        hidden = self.plans[index].hidden() if self.plans else []
        return list({**params, **{id(t): t for t in hidden}}.values())

    def branch_sources(self, index: int, which: int, kwargs: Mapping[str, Any]) -> set[int]:
        """Returns the ids of the tensors branch `which` (0: f, 1: g) of block `index` can pass gradients to
        besides its input: its keyword tensors, its parameters, and the leaves it uses without owning them."""
        used = {id(t) for t in tensors_in(kwargs)} | {id(p) for p in self.blocks[index][which].parameters()}
        if self.plans:
            used |= {id(t) for t in self.plans[index].branches[which].hidden}
        return used

    def capture(self, index: int, which: int, known: torch.Tensor, kwargs: Mapping[str, Any]) -> CallState:
        """Returns the state a forward call of branch `which` (0: f, 1: g) of block `index` runs under."""
        buffers = self.plans[index].branches[which].buffers if self.plans else ()
        return CallState.capture(known, generators=generators_in(kwargs), buffers=buffers)


@dataclass
class Progress:
    """What a call's forward leaves for its backward, and how far that backward has come."""

    states: list[tuple[CallState, CallState]] = field(default_factory=list)
    sides: list[tuple[torch.Tensor | None, torch.Tensor | None]] = field(default_factory=list)  # exact scaling's bits
    streams: tuple[torch.Tensor, torch.Tensor] | None = None  # outputs of the block whose backward runs next
    backward_started: bool = False
    tapped: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # the taps' output streams
    # Gradients of the slot tensors (by position) summed so far, branch by branch in autograd's order, and returned
    # once by the first block: summed per block instead, float64 gradients would differ from autograd's by an ulp
    slot_grads: dict[int, torch.Tensor] = field(default_factory=dict)


def _is_fsdp(module: nn.Module) -> bool:
    """Is `module` an FSDP2 `fully_shard` module? (Never true unless FSDP was imported, so never imports it.)"""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def checked_output(stream: torch.Tensor, output: Any, index: int, branch: str) -> torch.Tensor:
    """Returns `output`, refusing one whose shape differs from the stream's: broadcasting would silently
    change the stream's shape (and make the block impossible to invert)."""
    if not isinstance(output, torch.Tensor) or output.shape != stream.shape:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"block {index}'s {branch} returned {shape} for a stream of shape {tuple(stream.shape)}; "
            "residual branches must return a tensor of the stream's shape"
        )
    return output


class ParameterSlots:
    """Where a block's branches hold their parameters, and the tensors held there when its forward ran.

    The recompute swaps detached aliases of those tensors into the same places and differentiates
    with respect to the aliases. So it computes with the forward's weights even when the caller swapped
    them for that call only (`torch.func.functional_call`), gradient hooks on the parameters run once
    (when the Function's gradient reaches them, as under autograd; never inside the recompute), and a
    branch calling a module of its sibling gives that module's parameters its share.
    """

    def __init__(self, block: tuple[nn.Module, nn.Module], params: Sequence[torch.Tensor]) -> None:
        owners = {id(m): m for branch in block if not _is_fsdp(branch) for m in branch.modules()}
        self.slots = [(owner, name, tensor) for owner in owners.values() for name, tensor in owner._parameters.items()
                      if tensor is not None]
        # What the recompute also relies on: the modules' train/eval modes and the parameters' values
        self.modes = [(owner, owner.training) for owner in owners.values()]
        self.versions = [(p, p._version) for p in params]

    def refuse_changes(self, index: int) -> None:
        """Raises RuntimeError if a mode or a parameter changed since the forward: the recompute would differ."""
        if any(owner.training != training for owner, training in self.modes):
            raise RuntimeError(
                f"revzoo: block {index}'s train/eval mode changed between forward and backward (model.eval() or "
                "model.train() before backward()); execution='invert' recomputes the block in backward, so dropout "
                "and normalisation would differ. Change modes after backward"
            )
        if any(p._version != version for p, version in self.versions):
            raise RuntimeError(
                f"revzoo: a parameter of block {index} was modified in place between forward and backward "
                "(optimizer.step() before backward()?); execution='invert' recomputes the block in backward from its "
                "parameters, as autograd refuses the same (\"modified by an inplace operation\")"
            )

    def aliases(self) -> dict[int, torch.Tensor]:
        """Returns a fresh leaf per forward tensor (by id), requiring grad as that tensor does."""
        return {id(t): t.detach().requires_grad_(t.requires_grad) for _, _, t in self.slots}

    @contextlib.contextmanager
    def swapped_in(self, aliases: dict[int, torch.Tensor]) -> Iterator[None]:
        now = [owner._parameters[name] for owner, name, _ in self.slots]
        try:
            for owner, name, tensor in self.slots:
                owner._parameters[name] = aliases[id(tensor)]
            yield
        finally:
            for (owner, name, _), tensor in zip(self.slots, now):
                owner._parameters[name] = tensor


def _refuse_unplanned(call: StackCall, index: int, which: int, output: torch.Tensor, known: set[int]) -> None:
    """Raises RuntimeError if the recompute's graph reaches a leaf requiring grad that is no input of the block's
    Function: its gradient would be lost. The block's plan is marked stale, so the next call probes it again."""
    if not output.requires_grad:
        return
    seen, pending = set(), [output.grad_fn]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in known:
            if call.plans:
                call.plans[index].stale = True
            raise RuntimeError(
                f"revzoo: block {index}'s {'fg'[which]} used a tensor requiring grad (shape {tuple(variable.shape)}) "
                "that it did not use when execution='invert' planned it (a parameter used only on some calls, or "
                "replaced since); its gradient would be lost, so this backward stops. The next call plans again: "
                "run the step again"
            )
        pending.extend(child for child, _ in node.next_functions)


def _grads(output: torch.Tensor, targets: list[torch.Tensor], grad_output: torch.Tensor | None) -> list[torch.Tensor | None]:
    wanted = [t for t in targets if t.requires_grad]
    if grad_output is None or not output.requires_grad or not wanted:
        return [None] * len(targets)
    found = iter(torch.autograd.grad(output, wanted, grad_output, allow_unused=True))
    return [next(found) if t.requires_grad else None for t in targets]


def _add(total: torch.Tensor | None, grad: torch.Tensor | None) -> torch.Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad


class _Recompute:
    """One block's backward: recomputes each branch from the block's outputs and collects the gradients
    reaching the block's slot tensors (context and keyword tensors) and parameters, by id."""

    def __init__(self, ctx: Any, saved: Sequence[torch.Tensor]) -> None:
        self.call: StackCall = ctx.call
        self.index: int = ctx.index
        self.states = ctx.progress.states[ctx.index]
        self.side = ctx.progress.sides[ctx.index]
        self.parameter_slots: ParameterSlots = ctx.parameter_slots
        needs = ctx.needs_input_grad[6:]
        slot_needs, param_needs = needs[: ctx.num_slots], needs[ctx.num_slots :]
        self.leaves = [value.detach().requires_grad_(need) for value, need in zip(saved[: ctx.num_slots], slot_needs)]
        self.kwargs = self.call.branch_kwargs(self.index, self.leaves)
        self.params = ctx.params  # the tensors the forward used, also where the caller swapped them for that call
        self.aliases = self.parameter_slots.aliases()
        self.wanted = [leaf for leaf in self.leaves if leaf.requires_grad]
        self.wanted += [self.aliases.get(id(p), p) for p, need in zip(self.params, param_needs) if need]
        self.sibling = {id(alias) for alias in self.aliases.values()}  # either branch may call the other's modules
        self.progress: Progress = ctx.progress
        self.totals: dict[int, torch.Tensor | None] = {
            id(leaf): self.progress.slot_grads.pop(position) for position, leaf in enumerate(self.leaves)
            if position in self.progress.slot_grads
        }

    def undo(self, which: int, known: torch.Tensor, result: torch.Tensor, grad: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Given `result = scale·other + branch(known)`, returns `other` and the gradient reaching `known`."""
        branch, kwargs, arith = self.call.blocks[self.index][which], self.kwargs[which], self.call.arith
        with self.states[which].restore(), self.parameter_slots.swapped_in(self.aliases):
            known = known.requires_grad_()
            output = branch(arith.branch_input(known), **kwargs)
        if _is_fsdp(branch):
            grad_known = self._accumulate_sharded(known, output, kwargs, grad)
        else:
            grad_known = self._differentiate(which, known, output, kwargs, grad)
        with torch.no_grad():
            return arith.separate(which, result, output, self.side[which]), grad_known

    def _differentiate(self, which: int, known: torch.Tensor, output: torch.Tensor, kwargs: dict,
                       grad: torch.Tensor | None) -> torch.Tensor | None:
        used = self.call.branch_sources(self.index, which, kwargs) | self.sibling
        _refuse_unplanned(self.call, self.index, which, output, used | {id(known)})
        targets = [t for t in self.wanted if id(t) in used]
        grad_known, *rest = _grads(output, [known, *targets], grad)
        for target, target_grad in zip(targets, rest):
            self.totals[id(target)] = _add(self.totals.get(id(target)), target_grad)
        return grad_known

    def _accumulate_sharded(self, known: torch.Tensor, output: torch.Tensor, kwargs: dict,
                            grad: torch.Tensor | None) -> torch.Tensor | None:
        """FSDP2 reduce-scatters from hooks on its unsharded parameters' accumulation, so a fully_shard branch is
        differentiated by accumulation; `known` and the routed leaves are fresh leaves of this backward, so their
        .grad holds exactly this branch's share."""
        slots = [v for v in tensors_in(kwargs) if v.requires_grad]
        if grad is not None:
            torch.autograd.backward(output, grad)
        for leaf in slots:
            self.totals[id(leaf)] = _add(self.totals.get(id(leaf)), leaf.grad)
            leaf.grad = None
        return known.grad

    def input_gradients(self) -> tuple[torch.Tensor | None, ...]:
        """The gradients of the Function's slot and parameter inputs, in its input order; the slots' only from
        the first block (the last backward), the others' carried to the block before."""
        slots = [self.totals.get(id(leaf)) for leaf in self.leaves]
        if self.index > 0:
            self.progress.slot_grads.update((position, grad) for position, grad in enumerate(slots) if grad is not None)
            slots = [None] * len(slots)
        return (*slots, *(self.totals.get(id(self.aliases.get(id(p), p))) for p in self.params))


class _BlockFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call: StackCall, progress: Progress, index: int, num_slots: int, x1: torch.Tensor,
                x2: torch.Tensor, *tensors):
        f, g = call.blocks[index]
        arith = call.arith
        f_kwargs, g_kwargs = call.branch_kwargs(index)
        if call.trace is not None:
            call.trace.inputs.append((x1.clone(), x2.clone()))
        f_state = call.capture(index, 0, x2, f_kwargs)
        y1 = arith.combine(index, 0, x1, checked_output(x1, f(arith.branch_input(x2), **f_kwargs), index, "f"))
        g_state = call.capture(index, 1, y1, g_kwargs)
        y2 = arith.combine(index, 1, x2, checked_output(x2, g(arith.branch_input(y1), **g_kwargs), index, "g"))
        progress.states.append((f_state, g_state))
        progress.sides.append((arith.side_bits(0, x1), arith.side_bits(1, x2)))
        ctx.call, ctx.progress, ctx.index, ctx.num_slots = call, progress, index, num_slots
        ctx.params, ctx.parameter_slots = tensors[num_slots:], ParameterSlots(call.blocks[index], tensors[num_slots:])
        ctx.is_last = index == len(call.blocks) - 1
        # The last block's outputs start the inversion; a tapped block's outputs also leave the chain, so
        # its backward may be the first to run: both keep them (two streams, not the blocks' activations).
        ctx.keeps_outputs = ctx.is_last or index in call.taps
        ctx.save_for_backward(*tensors[:num_slots], *((y1, y2) if ctx.keeps_outputs else ()))
        # An output nothing uses (the last g under output="f") gets None, not zeros, so its branch's
        # parameters keep .grad None, as under autograd (optimizers skip them instead of decaying them).
        ctx.set_materialize_grads(False)
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y1: torch.Tensor | None, grad_y2: torch.Tensor | None):
        call, progress = ctx.call, ctx.progress
        saved = ctx.saved_tensors
        if ctx.is_last:
            if progress.backward_started:
                raise RuntimeError(
                    "revzoo: backward ran twice through the same reversible stack call; "
                    "run the forward again (retain_graph cannot help: no activations were stored)"
                )
            progress.backward_started = True
        if ctx.keeps_outputs:
            progress.streams = (saved[-2].detach(), saved[-1].detach())
        ctx.parameter_slots.refuse_changes(ctx.index)
        recompute = _Recompute(ctx, saved)
        y1, y2 = progress.streams
        x2, grad_y1_through_g = recompute.undo(1, y1, y2, grad_y2)
        grad_y1 = _add(grad_y1, grad_y1_through_g)
        x1, grad_x2_through_f = recompute.undo(0, x2, y1, grad_y1)
        grad_x2 = _add(call.arith.grad_through_scale(1, grad_y2), grad_x2_through_f)
        grad_x1 = call.arith.grad_through_scale(0, grad_y1)
        progress.streams = (x2.detach(), x1.detach()) if call.swap else (x1.detach(), x2.detach())
        if call.trace is not None:
            call.trace.reconstructed[ctx.index] = (x1.detach().clone(), x2.detach().clone())
        return None, None, None, None, grad_x1, grad_x2, *recompute.input_gradients()


def _refuse_sharded(params: list[nn.Parameter]) -> None:
    """Sharded parameters outside a fully_shard branch would never be unsharded: revzoo calls the branches, not
    the modules around them, so only the branches' own FSDP2 hooks run."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is not None and any(isinstance(p, dtensor.DTensor) for p in params):
        raise NotImplementedError(
            "revzoo: execution='invert' found FSDP2-sharded parameters outside a fully_shard branch; apply "
            "fully_shard to each branch (stack.blocks[i].f and .g), not to the block or the stack"
        )


def run_invert(
    call: StackCall, x1: torch.Tensor, x2: torch.Tensor, structure: KeywordStructure | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Returns the two output streams of `call` (swapped after the last block if the coupling swaps),
    differentiable by inversion, and the output streams of its tapped blocks. The input streams are already
    in the call's arithmetic (`arith.enter`). `structure` is checked after each block: a block that changes
    a keyword container is refused there."""
    slot_values = call.slot_values()
    progress = Progress()
    y1, y2 = x1, x2
    for index in range(len(call.blocks)):
        params = call.block_parameters(index)
        _refuse_sharded(params)
        y1, y2 = _BlockFunction.apply(call, progress, index, len(slot_values), y1, y2, *slot_values, *params)
        if structure is not None:
            structure.check(f"block {index}")
        if call.swap:
            y1, y2 = y2, y1
        if index in call.taps:
            progress.tapped[index] = (y1, y2)
    return (y1, y2), progress.tapped
