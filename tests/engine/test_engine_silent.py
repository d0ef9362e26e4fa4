"""Cases where the invert execution once returned numbers that differ from autograd's without a word.

Each either gives autograd's gradients (compared in float64, tensor by tensor) or ends in a clear error.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import revzoo


class Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_check_reversible_reports_a_nan_reconstruction_as_nan() -> None:
    stack = revzoo.ReversibleSequence([(Scaled(math.inf), nn.Linear(3, 3))])
    report = revzoo.check_reversible(stack, torch.randn(2, 3))
    assert math.isnan(report.max_reconstruction_error) and math.isnan(report.blocks[0].reconstruction_abs)


def _stack(depth: int = 3, dim: int = 4) -> revzoo.ReversibleSequence:
    torch.manual_seed(0)
    return revzoo.ReversibleSequence([(nn.Linear(dim, dim), nn.Sequential(nn.Linear(dim, dim), nn.Tanh()))
                                      for _ in range(depth)]).double()


def _grads(stack: nn.Module, execution: str, run=None) -> dict[str, torch.Tensor]:
    """Gradients of a fixed projection of the stack's output under `execution`, by parameter name."""
    revzoo.set_execution(stack, execution)
    stack.zero_grad(set_to_none=True)
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(2, 4).requires_grad_()
    out = (run or stack)(x)
    (out * torch.linspace(-2, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return {"input": x.grad, **{name: p.grad for name, p in stack.named_parameters()}}


def _assert_same(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert want.keys() == got.keys()
    for name in want:
        assert want[name] is not None and got[name] is not None and want[name].abs().max() > 0, name
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-10, msg=name)


def test_gradient_hooks_on_branch_parameters_run_once() -> None:
    stack = _stack()
    calls = []
    for p in stack.parameters():
        p.register_hook(lambda grad: grad * 10)
        p.register_post_accumulate_grad_hook(lambda p: calls.append(p))
    want = _grads(stack, "autograd")
    hooked_calls, calls[:] = len(calls), []
    _assert_same(want, _grads(stack, "invert"))  # the recompute's own autograd.grad ran the hook too: 100x
    assert len(calls) == hooked_calls == len(list(stack.parameters()))


def test_functional_call_differentiates_the_replacement_weights() -> None:
    stack = _stack()
    weights = {name: (p.detach() * 1.5 + 0.1).requires_grad_() for name, p in stack.named_parameters()}

    def replaced(execution: str) -> list[torch.Tensor]:
        revzoo.set_execution(stack, execution)
        x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(2, 4)
        out = torch.func.functional_call(stack, weights, (x,))
        return torch.autograd.grad((out * torch.linspace(-2, 1, 8, dtype=out.dtype).view_as(out)).sum(),
                                   list(weights.values()))

    for want, got in zip(replaced("autograd"), replaced("invert")):  # the recompute used the module's own weights
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


class UsesSibling(nn.Module):
    """An f that calls its block's g's Linear, held in a plain list (so not one of f's parameters)."""

    def __init__(self, sibling: nn.Linear) -> None:
        super().__init__()
        self.own = nn.Linear(4, 4)
        self.sibling = [sibling]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.own(x) + self.sibling[0](x).sin()


def test_a_branch_using_its_siblings_parameter_gives_it_its_share() -> None:
    torch.manual_seed(0)
    blocks = []
    for _ in range(2):
        g = nn.Linear(4, 4)
        blocks.append((UsesSibling(g), g))
    stack = revzoo.ReversibleSequence(blocks).double()
    _assert_same(_grads(stack, "autograd"), _grads(stack, "invert"))


class Cache:
    """A stand-in for transformers' DynamicCache: an object each layer appends its keys to."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []


class Appends(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        self.calls += 1
        keys = cache.keys if isinstance(cache, Cache) else cache
        keys.append(self.linear(x))
        return torch.cat(keys, 0)[-x.shape[0]:].tanh()


def _cached_stack() -> revzoo.ReversibleSequence:
    torch.manual_seed(0)
    return revzoo.ReversibleSequence([(Appends(), nn.Linear(4, 4)) for _ in range(2)], routes={"cache": "f"}).double()


def test_a_mutable_keyword_object_is_refused_before_any_work() -> None:
    stack, x = _cached_stack(), torch.randn(2, 4, dtype=torch.float64)
    try:
        stack(x, cache=Cache())
        raise AssertionError("a cache object passed silently")
    except TypeError as error:
        assert "keyword 'cache' is a Cache; under execution='invert'" in str(error) and "use_cache=False" in str(error)
    assert stack.blocks[0].f.calls == 0
    with torch.no_grad():  # inference (generation with a cache) is a plain loop
        stack(x, cache=Cache())
    stack.execution = "autograd"
    stack(x, cache=Cache()).sum().backward()


def test_a_list_keyword_a_block_appends_to_is_refused() -> None:
    stack, x = _cached_stack(), torch.randn(2, 4, dtype=torch.float64)
    try:  # before: StopIteration from the backward's rebuild, or gradients of a longer list
        stack(x, cache=[])
        raise AssertionError("a list appended to passed silently")
    except RuntimeError as error:
        assert "changed keyword 'cache' (a list)" in str(error)
    stack.execution = "autograd"
    stack(x, cache=[]).sum().backward()


def _dropout_stack() -> revzoo.ReversibleSequence:
    torch.manual_seed(0)
    return revzoo.ReversibleSequence([(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), nn.Linear(4, 4))
                                      for _ in range(2)]).double()


def test_a_mode_change_between_forward_and_backward_is_refused() -> None:
    stack = _dropout_stack()
    out = stack(torch.randn(2, 4, dtype=torch.float64, requires_grad=True))
    stack.eval()  # before: the recompute ran without dropout, gradients off by 1.89
    try:
        out.sum().backward()
        raise AssertionError("a mode change passed silently")
    except RuntimeError as error:
        assert "train/eval mode changed between forward and backward" in str(error)


def test_parameters_updated_in_place_between_forward_and_backward_are_refused() -> None:
    stack = _dropout_stack()
    out = stack(torch.randn(2, 4, dtype=torch.float64, requires_grad=True))
    with torch.no_grad():
        stack.blocks[0].g.weight.add_(1.0)  # as optimizer.step() does; autograd refuses it too
    try:
        out.sum().backward()
        raise AssertionError("an in-place update passed silently")
    except RuntimeError as error:
        assert "modified in place between forward and backward" in str(error)


class UsesParent(nn.Module):
    """A branch scaling by a parameter its parent model owns (a shared gate), reached without owning it."""

    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.__dict__["owner"] = owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.owner.gate


class WithGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        self.stack = revzoo.ReversibleSequence([(UsesParent(self), nn.Linear(4, 4)) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)


def test_a_parent_parameter_frozen_at_the_first_call_and_unfrozen_later_gets_its_gradient() -> None:
    torch.manual_seed(0)
    model = WithGate().double()
    model.gate.requires_grad_(False)  # progressive unfreezing: frozen for the first steps
    _grads(model, "invert")
    model.gate.requires_grad_(True)
    _assert_same(_grads(model, "autograd"), _grads(model, "invert"))


class GateOnRequest(nn.Module):
    """A branch that uses its parent's gate only when a routed flag asks (on later calls)."""

    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.__dict__["owner"] = owner

    def forward(self, x: torch.Tensor, gated: bool = False) -> torch.Tensor:
        out = self.linear(x)
        return out * self.owner.gate if gated else out


def test_a_parent_parameter_first_used_on_a_later_call_stops_that_backward_and_the_next_call_plans_again() -> None:
    torch.manual_seed(0)
    owner = nn.Module()
    owner.gate = nn.Parameter(torch.linspace(0.5, 1.5, 4, dtype=torch.float64))
    owner.stack = revzoo.ReversibleSequence([(GateOnRequest(owner), nn.Linear(4, 4)) for _ in range(2)],
                                            routes={"gated": "f"}).double()
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(2, 4)
    owner.stack(x).sum().backward()  # planned without the gate
    with pytest.raises(RuntimeError, match="did not use when execution='invert' planned it"):
        owner.stack(x, gated=True).sum().backward()
    owner.zero_grad(set_to_none=True)
    owner.stack(x, gated=True).sum().backward()  # planned again: the gate is an input now
    invert = {name: p.grad.clone() for name, p in owner.named_parameters()}
    owner.zero_grad(set_to_none=True)
    owner.stack.execution = "autograd"
    owner.stack(x, gated=True).sum().backward()
    for name, p in owner.named_parameters():
        torch.testing.assert_close(invert[name], p.grad, rtol=0, atol=1e-12, msg=name)


def test_a_parent_parameter_replaced_after_the_first_call_is_never_silently_left_without_gradient() -> None:
    torch.manual_seed(0)
    model = WithGate().double()
    _grads(model, "invert")
    model.gate = nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))  # the planned tensor is gone
    with pytest.raises(RuntimeError, match="did not use when execution='invert' planned it"):
        _grads(model, "invert")
    _assert_same(_grads(model, "autograd"), _grads(model, "invert"))  # planned again


class Counts(nn.Module):
    """A branch whose output depends on how often it ran: state torch's RNG and buffers do not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) * (1 + 0.1 * self.calls)


def test_check_reversible_finds_state_outside_the_rng_and_buffers() -> None:
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(2, 4)
    counting = revzoo.ReversibleSequence([(Counts(), nn.Linear(4, 4))]).double()
    report = revzoo.check_reversible(counting, x)
    assert not report.repeatable and "NOT REPEATABLE" in str(report)
    with_dropout = revzoo.ReversibleSequence([(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), nn.Linear(4, 4))])
    assert revzoo.check_reversible(with_dropout.double(), x).repeatable  # torch's RNG is put back: repeatable
