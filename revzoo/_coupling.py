"""The reversible coupling as an autograd Function that stores no block activations.

Forward keeps only the stack's two output streams. Backward walks the blocks in
reverse, recomputing each block's inputs from its outputs (`x2 = y2 - g(y1)`,
`x1 = y1 - f(x2)`) under the RNG and autocast state its forward call ran under.

Every tensor that gradients must reach (the stream, context and routed keyword tensors,
and every parameter of the stack) is an input of the one Function and receives its
gradient as an output of `backward`. Parameters therefore see one accumulation per
backward, as with plain autograd, which is what DistributedDataParallel's hooks rely on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ._callstate import CallState
from ._routes import RouteTable

__all__ = ["CouplingRun", "run_invert"]


@dataclass
class CouplingRun:
    """One call of a stack: its blocks, routes, and the call's keyword data.

    `kwargs` and `context` hold the call's values; their tensors are also inputs of the
    Function, so backward can substitute leaves that collect their gradients.
    """

    blocks: Sequence[tuple[nn.Module, nn.Module]]
    routes: RouteTable
    kwargs: Mapping[str, Any]
    context: Mapping[str, Any]
    trace: dict | None = None  # check_reversible's: {"inputs": [(x1, x2)], "reconstructed": {index: (x1, x2)}}
    states: list[tuple[CallState, CallState]] = field(default_factory=list)

    def tensor_slots(self) -> list[tuple[str, str]]:
        """Returns `(source, name)` of every tensor among the call's context and kwargs, in a fixed order."""
        return [
            (source, name)
            for source, values in (("context", self.context), ("kwargs", self.kwargs))
            for name, value in values.items()
            if isinstance(value, torch.Tensor)
        ]

    def branch_kwargs(self, index: int) -> tuple[dict, dict]:
        return self.routes.split(index, self.kwargs, self.context)

    def parameters(self) -> list[nn.Parameter]:
        """Returns the stack's parameters, each once, even when modules are shared between blocks."""
        seen: dict[int, nn.Parameter] = {}
        for f, g in self.blocks:
            for module in (f, g):
                for param in module.parameters():
                    seen.setdefault(id(param), param)
        return list(seen.values())


def _grads(output: torch.Tensor, targets: list[torch.Tensor], grad_output: torch.Tensor) -> list[torch.Tensor | None]:
    wanted = [t for t in targets if t.requires_grad]
    if not output.requires_grad or not wanted:
        return [None] * len(targets)
    found = iter(torch.autograd.grad(output, wanted, grad_output, allow_unused=True))
    return [next(found) if t.requires_grad else None for t in targets]


def _add(total: torch.Tensor | None, grad: torch.Tensor | None) -> torch.Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: CouplingRun, num_slots: int, stream: torch.Tensor, *tensors: torch.Tensor):
        y1 = y2 = stream
        run.states = []
        for index, (f, g) in enumerate(run.blocks):
            f_kwargs, g_kwargs = run.branch_kwargs(index)
            if run.trace is not None:
                run.trace["inputs"].append((y1.clone(), y2.clone()))
            f_state = CallState.capture(y2)
            y1 = y1 + f(y2, **f_kwargs)
            g_state = CallState.capture(y1)
            y2 = y2 + g(y1, **g_kwargs)
            run.states.append((f_state, g_state))
        ctx.run = run
        ctx.num_slots = num_slots
        ctx.used = False
        ctx.save_for_backward(y1, y2, *tensors[:num_slots])
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y1: torch.Tensor, grad_y2: torch.Tensor):
        if ctx.used:
            raise RuntimeError(
                "revzoo: backward ran twice through the same reversible stack call; "
                "run the forward again (retain_graph is not supported: nothing was stored)"
            )
        ctx.used = True
        run: CouplingRun = ctx.run
        y1, y2, *slot_values = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        slot_needs, param_needs = needs[: ctx.num_slots], needs[ctx.num_slots :]
        leaves = [value.detach().requires_grad_(need) for value, need in zip(slot_values, slot_needs)]
        slots = run.tensor_slots()
        rebound = {"context": dict(run.context), "kwargs": dict(run.kwargs)}
        for (source, name), leaf in zip(slots, leaves):
            rebound[source][name] = leaf
        run = CouplingRun(run.blocks, run.routes, rebound["kwargs"], rebound["context"], run.trace, run.states)
        params = run.parameters()
        param_index = {id(p): i for i, p in enumerate(params)}
        leaf_index = {id(leaf): i for i, leaf in enumerate(leaves)}
        leaf_grads: list[torch.Tensor | None] = [None] * len(leaves)
        param_grads: list[torch.Tensor | None] = [None] * len(params)

        def collect(kwargs: dict, module: nn.Module) -> list[torch.Tensor]:
            tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and id(v) in leaf_index]
            return tensors + [p for p in module.parameters() if param_needs[param_index[id(p)]]]

        def accumulate(targets: list[torch.Tensor], grads: list[torch.Tensor | None]) -> None:
            for target, grad in zip(targets, grads):
                if id(target) in leaf_index:
                    i = leaf_index[id(target)]
                    leaf_grads[i] = _add(leaf_grads[i], grad)
                else:
                    i = param_index[id(target)]
                    param_grads[i] = _add(param_grads[i], grad)

        y1, y2 = y1.detach(), y2.detach()
        for index in reversed(range(len(run.blocks))):
            f, g = run.blocks[index]
            f_state, g_state = run.states[index]
            f_kwargs, g_kwargs = run.branch_kwargs(index)

            with g_state.restore():
                y1 = y1.requires_grad_()
                g_out = g(y1, **g_kwargs)
            targets = collect(g_kwargs, g)
            grad_y1_from_g, *rest = _grads(g_out, [y1, *targets], grad_y2)
            accumulate(targets, rest)
            grad_y1 = _add(grad_y1, grad_y1_from_g)
            with torch.no_grad():
                x2 = y2 - g_out

            with f_state.restore():
                x2 = x2.requires_grad_()
                f_out = f(x2, **f_kwargs)
            targets = collect(f_kwargs, f)
            grad_x2_from_f, *rest = _grads(f_out, [x2, *targets], grad_y1)
            accumulate(targets, rest)
            with torch.no_grad():
                x1 = y1 - f_out
            grad_y2 = _add(grad_y2, grad_x2_from_f)
            y1, y2 = x1.detach(), x2.detach()
            if run.trace is not None:
                run.trace["reconstructed"][index] = (y1.clone(), y2.clone())
            del g_out, f_out

        grad_stream = grad_y1 + grad_y2
        return (None, None, grad_stream, *leaf_grads, *param_grads)


def run_invert(run: CouplingRun, stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the two output streams of `run`, differentiable by inversion."""
    slots = run.tensor_slots()
    slot_values = [(run.context if source == "context" else run.kwargs)[name] for source, name in slots]
    return _ReversibleFunction.apply(run, len(slots), stream, *slot_values, *run.parameters())
