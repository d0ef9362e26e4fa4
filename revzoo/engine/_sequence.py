"""ReversibleSequence: a stack of `(f, g)` blocks in the reversible or the sequential form."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn

from ._compile import check_range_outside_graph, invert_outside_graph
from ._coupling import Coupling, arithmetic_for
from ._invert import CallTrace, StackCall, WholeBlock, checked_output
from ._layout import StreamLayout
from ._probe import InvertPlans
from ._routes import RoutesArg, RouteTable

__all__ = [
    "Execution", "Form", "ReversibleSequence", "get_execution", "get_form", "named_stacks", "set_execution", "set_form"
]

Form = Literal["reversible", "sequential"]
Execution = Literal["invert", "autograd"]
FORMS: tuple[str, ...] = ("reversible", "sequential")
EXECUTIONS: tuple[str, ...] = ("invert", "autograd")


class Block(nn.Module):
    """One `(f, g)` pair; exists so that both forms keep the keys `blocks.{i}.f` and `blocks.{i}.g`.

    A block may also hold an `adapter` (see `ReversibleSequence.set_adapters`).
    """

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g
        self.adapter: nn.Module | None = None


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, valid))}")
    return value


class ReversibleSequence(nn.Module):
    """Runs pairs of residual functions `(f, g)` reversibly or sequentially.

    Reversible form: streams start as `(x, x)`, each block computes `y1 = x1 + f(x2)`,
    `y2 = x2 + g(y1)`, and the output is `(y1 + y2) / 2`. With `execution="invert"`,
    backward recomputes each block's inputs from its outputs, so activation memory does
    not grow with depth; `execution="autograd"` differentiates the same function by
    plain autograd (the gradient reference, and the path for `torch.compile`/export).

    Sequential form: `x = x + f(x); x = x + g(x)` with the same parameters: a different
    function, as `reversible=False` is in DALLE-pytorch.

    `coupling` generalises the reversible form (scales λ, β, a stream swap, the output: see
    `Coupling`); `exact=True` computes it in fixed point, so that inversion reconstructs every
    block's inputs bitwise, whatever the depth and scales (both executions compute that function).

    Args:
        blocks: the `(f, g)` module pairs; a module may appear in several blocks.
        routes: which keyword arguments of a call reach `f`, `g` or both: one mapping for
            all blocks or one per block.
        layout: which element of tuple/dict data is the stream; None for a single tensor.
        form: "reversible" or "sequential".
        execution: "invert" or "autograd".
        coupling: scales, swap and output of the reversible form; None for the plain coupling.
        exact: run the reversible form in exact fixed-point arithmetic (scales must be powers of two).

    Example:
        >>> stack = ReversibleSequence([(nn.Linear(8, 8), nn.Linear(8, 8))])
        >>> stack(torch.randn(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        blocks: Iterable[tuple[nn.Module, nn.Module]],
        routes: RoutesArg = None,
        layout: StreamLayout | None = None,
        form: Form = "reversible",
        execution: Execution = "invert",
        coupling: Coupling | None = None,
        exact: bool = False,
    ) -> None:
        super().__init__()
        pairs = list(blocks)
        for index, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(m, nn.Module) for m in pair)):
                raise TypeError(f"blocks[{index}] must be an (f, g) pair of nn.Modules, got {pair!r:.80}")
        if layout is not None and not isinstance(layout, StreamLayout):
            raise TypeError(f"layout must be a revzoo.StreamLayout or None, got {type(layout).__name__}")
        self.blocks = nn.ModuleList(Block(f, g) for f, g in pairs)
        self.routes = RouteTable(routes, len(pairs))
        self.layout = layout
        self.form = form
        self.execution = execution
        self._coupling = Coupling()
        self._exact = False
        self.set_coupling(coupling or Coupling(), exact)
        self._recorded: list[CallTrace] | None = None  # see recording_inversions
        self.invert_plans = InvertPlans()  # what each branch needs under "invert", found at the first call

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, value: str) -> None:
        self._form = _choice(value, FORMS, "form")

    @property
    def execution(self) -> str:
        return self._execution

    @execution.setter
    def execution(self, value: str) -> None:
        self._execution = _choice(value, EXECUTIONS, "execution")

    @property
    def coupling(self) -> Coupling:
        return self._coupling

    @coupling.setter
    def coupling(self, value: Coupling) -> None:
        self.set_coupling(value, self._exact)

    @property
    def exact(self) -> bool:
        return self._exact

    @exact.setter
    def exact(self, value: bool) -> None:
        self.set_coupling(self._coupling, value)

    def set_coupling(self, coupling: Coupling, exact: bool) -> None:
        """Sets both at once, refusing (before changing anything) a pair that exact arithmetic cannot call."""
        if not isinstance(coupling, Coupling):
            raise TypeError(f"coupling must be a revzoo.Coupling, got {type(coupling).__name__}")
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be True or False, got {exact!r}")
        if exact:
            coupling.shifts()
        self._coupling, self._exact = coupling, exact

    @property
    def has_adapters(self) -> bool:
        return self.blocks[0].adapter is not None if len(self.blocks) else False

    def set_adapters(self, adapters: Iterable[nn.Module] | None) -> None:
        """Gives every block an adapter, or (None) removes them.

        With adapters, the reversible form couples `F = x + f(x)` then `+ g(...)`, the whole
        block as the sequential form runs it, with `G = adapter`: a pretrained sequential
        block keeps its function when the adapter outputs zero and the scales are small.
        The sequential form ignores adapters.
        """
        modules = [None] * len(self.blocks) if adapters is None else list(adapters)
        if len(modules) != len(self.blocks) or not all(m is None or isinstance(m, nn.Module) for m in modules):
            raise ValueError(f"set_adapters needs {len(self.blocks)} nn.Modules (one per block) or None")
        for block, module in zip(self.blocks, modules):
            block.adapter = module

    def extra_repr(self) -> str:
        extra = "" if self._coupling == Coupling() else f", coupling={self._coupling}"
        extra += ", exact=True" if self._exact else ""
        extra += ", adapters=True" if self.has_adapters else ""
        return f"form={self.form!r}, execution={self.execution!r}, depth={len(self.blocks)}{extra}"

    def forward(self, data: Any, **kwargs: Any) -> Any:
        self.routes.check(kwargs)
        stream, context = self._split(data)
        output = self._run(self._call(len(self.blocks), kwargs, context), stream)
        return output if self.layout is None else self.layout.join(data, output)

    def intermediates(self, data: Any, indices: Iterable[int], /, **kwargs: Any) -> list[Any]:
        """Returns the stack's output after each block in `indices` (ascending), running no block past the last.

        The output after block `i` is what a stack of the first `i + 1` blocks returns: the
        stream in the sequential form, the coupling's output of the two streams in the
        reversible form. Under "invert" only the two streams after each taken block are kept
        for backward (they leave the chain there), not the blocks' activations: memory stays
        flat in depth. For timm-style feature extraction (`forward_intermediates`).
        """
        self.routes.check(kwargs)
        take = sorted({index if index >= 0 else len(self.blocks) + index for index in indices})
        if not take or take[0] < 0 or take[-1] >= len(self.blocks):
            raise IndexError(f"block indices {list(indices)} out of range for a stack of {len(self.blocks)} blocks")
        stream, context = self._split(data)
        call = self._call(take[-1] + 1, kwargs, context, taps=frozenset(take))
        if self._inverts():
            start = self._start(call, stream)
            _, tapped = invert_outside_graph(self.invert_plans, self.blocks[: take[-1] + 1], call, *start)
            outputs = [self._readout(call, *tapped[index]) for index in take]
        else:
            outputs = self._loop(call, stream, set(take))[1]
        return outputs if self.layout is None else [self.layout.join(data, output) for output in outputs]

    def _split(self, data: Any) -> tuple[torch.Tensor, dict]:
        if self.layout is not None:
            return self.layout.split(data)
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"this stack takes one tensor (it has no StreamLayout), got {type(data).__name__}")
        return data, {}

    @contextlib.contextmanager
    def recording_inversions(self) -> Iterator[list[CallTrace]]:
        """Yields a list that gets, for each call under "invert" while the context lasts, what its blocks took
        as inputs in forward and what its backward reconstructed (for `check_reversible` and benchmarks: it
        keeps a copy of every block's input streams)."""
        recorded, self._recorded = self._recorded, []
        try:
            yield self._recorded
        finally:
            self._recorded = recorded

    def _inverts(self) -> bool:
        return self.form == "reversible" and self.execution == "invert" and torch.is_grad_enabled()

    def _call(self, depth: int, kwargs: dict, context: dict, taps: frozenset[int] = frozenset()) -> StackCall:
        """Returns what one call of the first `depth` blocks is."""
        whole = self.form == "reversible" and self.has_adapters
        blocks = [(WholeBlock(b.f, b.g), b.adapter) if whole else (b.f, b.g) for b in self.blocks[:depth]]
        arith = arithmetic_for(self._coupling, self._exact and self.form == "reversible")
        trace = None
        if self._recorded is not None and self._inverts():
            trace = CallTrace()
            self._recorded.append(trace)
        return StackCall(blocks, self.routes, kwargs, context, arith, self._coupling.swap, whole, taps=taps, trace=trace)

    def _run(self, call: StackCall, stream: torch.Tensor) -> torch.Tensor:
        if self._inverts():
            (y1, y2), _ = invert_outside_graph(self.invert_plans, self.blocks, call, *self._start(call, stream))
            return self._readout(call, y1, y2)
        return self._loop(call, stream)[0]

    def _start(self, call: StackCall, stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y2 = call.arith.enter(stream)
        if self._coupling.start == "zero":
            return torch.zeros_like(y2), y2
        # The second stream is a view, its own autograd node: the input's gradient is then (x1's) + (x2's) under
        # both executions, where three terms summed in the engine's order would round differently (float64).
        return y2, y2.view_as(y2)

    def _readout(self, call: StackCall, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        if self._coupling.output == "f":
            return call.arith.leave(y2 if call.swap else y1)
        return call.arith.leave((y1 + y2) / 2)

    def _loop(self, call: StackCall, stream: torch.Tensor, take: Collection[int] = ()) -> tuple[torch.Tensor, list]:
        """Runs the blocks one after the other under autograd; returns the output and the outputs after `take`."""
        taken = []
        if self.form == "sequential":
            for index, (f, g) in enumerate(call.blocks):
                f_kwargs, g_kwargs = call.branch_kwargs(index)
                stream = stream + checked_output(stream, f(stream, **f_kwargs), index, "f")
                stream = stream + checked_output(stream, g(stream, **g_kwargs), index, "g")
                if index in take:
                    taken.append(stream)
            return stream, taken
        arith = call.arith
        y1, y2 = self._start(call, stream)
        for index, (f, g) in enumerate(call.blocks):
            f_kwargs, g_kwargs = call.branch_kwargs(index)
            y1 = arith.combine(index, 0, y1, checked_output(y1, f(arith.branch_input(y2), **f_kwargs), index, "f"))
            y2 = arith.combine(index, 1, y2, checked_output(y2, g(arith.branch_input(y1), **g_kwargs), index, "g"))
            if call.swap:
                y1, y2 = y2, y1
            if index in take:
                taken.append(self._readout(call, y1, y2))
        if arith.exact:
            check_range_outside_graph(call)
        return self._readout(call, y1, y2), taken


def named_stacks(model: nn.Module) -> dict[str, ReversibleSequence]:
    """Returns every ReversibleSequence inside `model` (itself included) by its module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ReversibleSequence)}


def _stacks(model: nn.Module) -> list[ReversibleSequence]:
    stacks = list(named_stacks(model).values())
    if not stacks:
        raise TypeError(f"{type(model).__name__} contains no revzoo.ReversibleSequence")
    return stacks


def set_form(model: nn.Module, form: Form) -> nn.Module:
    """Sets the form of every ReversibleSequence inside `model`; returns `model`."""
    _choice(form, FORMS, "form")  # before any stack changes
    for stack in _stacks(model):
        stack.form = form
    return model


def set_execution(model: nn.Module, execution: Execution) -> nn.Module:
    """Sets the execution of every ReversibleSequence inside `model`; returns `model`."""
    _choice(execution, EXECUTIONS, "execution")
    for stack in _stacks(model):
        stack.execution = execution
    return model


def _shared(model: nn.Module, what: str) -> str:
    values = {getattr(stack, what) for stack in _stacks(model)}
    if len(values) != 1:
        raise ValueError(f"{type(model).__name__} mixes {what}s {sorted(values)}; set one with revzoo.set_{what}")
    return values.pop()


def get_form(model: nn.Module) -> str:
    """Returns the form shared by every ReversibleSequence inside `model`."""
    return _shared(model, "form")


def get_execution(model: nn.Module) -> str:
    """Returns the execution shared by every ReversibleSequence inside `model`."""
    return _shared(model, "execution")
