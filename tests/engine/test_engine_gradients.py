"""The reversible form's "invert" gradients equal plain autograd's, tensor by tensor, in float64."""

from __future__ import annotations

import pytest
import torch

import revzoo
from helpers import assert_same_grads, grads_of, pairs

DIM = 6


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _both_executions(stack: revzoo.ReversibleSequence, call, tensors, names) -> None:
    stack.execution = "autograd"
    reference = grads_of(call, tensors)
    stack.execution = "invert"
    candidate = grads_of(call, tensors)
    assert_same_grads(reference, candidate, names)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_single_tensor_stream(depth: int, input_requires_grad: bool) -> None:
    torch.manual_seed(depth)
    stack = revzoo.ReversibleSequence(pairs(depth, DIM))
    x = torch.randn(4, DIM, requires_grad=input_requires_grad)
    params = list(stack.parameters())
    tensors = params + ([x] if input_requires_grad else [])
    names = [n for n, _ in stack.named_parameters()] + (["x"] if input_requires_grad else [])
    _both_executions(stack, lambda: stack(x), tensors, names)


@pytest.mark.parametrize("route", ["f", "g", "both"])
@pytest.mark.parametrize("depth", [2, 3])
def test_routed_kwargs_get_gradients(route: str, depth: int) -> None:
    torch.manual_seed(1)
    stack = revzoo.ReversibleSequence(pairs(depth, DIM), routes={"gate": route, "bias": "both"})
    x = torch.randn(3, DIM, requires_grad=True)
    gate = torch.randn(3, DIM, requires_grad=True)
    bias = torch.randn(2, requires_grad=True)
    tensors = [*stack.parameters(), x, gate, bias]
    names = [n for n, _ in stack.named_parameters()] + ["x", "gate", "bias"]
    _both_executions(stack, lambda: stack(x, gate=gate, bias=bias), tensors, names)


def test_per_block_routes() -> None:
    torch.manual_seed(2)
    routes = [{"gate": "f"}, {"gate": "g"}, {"gate": "both"}]
    stack = revzoo.ReversibleSequence(pairs(3, DIM), routes=routes)
    x = torch.randn(3, DIM, requires_grad=True)
    gate = torch.randn(3, DIM, requires_grad=True)
    tensors = [*stack.parameters(), x, gate]
    names = [n for n, _ in stack.named_parameters()] + ["x", "gate"]
    _both_executions(stack, lambda: stack(x, gate=gate), tensors, names)


def test_tuple_layout_context_gets_gradients() -> None:
    torch.manual_seed(3)
    layout = revzoo.StreamLayout(stream="values", fields=("coords", "values", "mask"))
    stack = revzoo.ReversibleSequence(pairs(3, DIM), layout=layout, routes={"mask": "g"})
    coords = torch.randn(3, DIM, requires_grad=True)
    values = torch.randn(3, DIM, requires_grad=True)
    mask = torch.ones(3, DIM)

    def call() -> torch.Tensor:
        out = stack((coords, values, mask))
        assert out[0] is coords and out[2] is mask
        return out[1]

    tensors = [*stack.parameters(), coords, values]
    names = [n for n, _ in stack.named_parameters()] + ["coords", "values"]
    _both_executions(stack, call, tensors, names)


def test_dict_layout() -> None:
    torch.manual_seed(4)
    stack = revzoo.ReversibleSequence(pairs(2, DIM), layout=revzoo.StreamLayout(stream="h"))
    h = torch.randn(3, DIM, requires_grad=True)
    extra = torch.randn(3, DIM, requires_grad=True)
    tensors = [*stack.parameters(), h, extra]
    names = [n for n, _ in stack.named_parameters()] + ["h", "extra"]
    _both_executions(stack, lambda: stack({"h": h, "extra": extra})["h"], tensors, names)


def test_shared_modules_accumulate_once_per_backward() -> None:
    """A module reused by every block gets the sum of its gradients, delivered in one accumulation."""
    torch.manual_seed(5)
    (f, g), = pairs(1, DIM)
    stack = revzoo.ReversibleSequence([(f, g)] * 4)
    x = torch.randn(3, DIM, requires_grad=True)
    tensors = [*stack.parameters(), x]
    assert len(tensors) == 5  # deduplicated: f and g each hold weight and bias
    names = [n for n, _ in stack.named_parameters()] + ["x"]
    _both_executions(stack, lambda: stack(x), tensors, names)

    calls = {id(p): 0 for p in stack.parameters()}
    for p in stack.parameters():
        p.register_post_accumulate_grad_hook(lambda param: calls.__setitem__(id(param), calls[id(param)] + 1))
    stack(x).sum().backward()
    assert set(calls.values()) == {1}


def test_parameters_get_gradients_when_input_does_not_require_grad() -> None:
    stack = revzoo.ReversibleSequence(pairs(2, DIM, dropout=0.0))
    stack(torch.randn(2, DIM)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.parameters())


def test_check_reversible_reports_agreement() -> None:
    torch.manual_seed(6)
    stack = revzoo.ReversibleSequence(pairs(3, DIM), routes={"gate": "f"})
    report = revzoo.check_reversible(stack, torch.randn(2, DIM, requires_grad=True), gate=torch.randn(2, DIM))
    assert len(report.blocks) == 3
    assert report.max_grad_diff < 1e-10
    assert 0 < report.max_reconstruction_error < 1e-10 or report.max_reconstruction_error == 0
    assert "grad diff" in str(report)


def test_recording_inversions_keeps_each_calls_inputs_and_reconstructions_only_inside_the_context() -> None:
    torch.manual_seed(6)
    stack = revzoo.ReversibleSequence(pairs(3, DIM, dropout=0.0)).double()
    x = torch.randn(2, DIM, dtype=torch.float64, requires_grad=True)
    with stack.recording_inversions() as traces:
        stack(x).sum().backward()
        stack.execution = "autograd"  # nothing to reconstruct: not recorded
        stack(x).sum().backward()
        stack.execution = "invert"
        with torch.no_grad():
            stack(x)
    assert len(traces) == 1 and len(traces[0].inputs) == 3 and sorted(traces[0].reconstructed) == [0, 1, 2]
    torch.testing.assert_close(traces[0].inputs[0], (x.detach(), x.detach()), rtol=0, atol=0)
    for index, rebuilt in traces[0].reconstructed.items():
        torch.testing.assert_close(rebuilt, traces[0].inputs[index], rtol=1e-12, atol=1e-12)
    stack(x).sum().backward()
    assert len(traces) == 1  # after the context nothing more is kept


def test_check_reversible_detects_a_non_invertible_branch() -> None:
    """A branch whose output changes between forward and recompute breaks inversion; the report shows it."""

    class Drifting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(DIM, DIM)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.linear(x) * self.calls

    stack = revzoo.ReversibleSequence([(Drifting(), Drifting()), (Drifting(), Drifting())])
    report = revzoo.check_reversible(stack, torch.randn(2, DIM, requires_grad=True))
    assert report.max_grad_diff > 1e-6
    assert report.max_reconstruction_error > 1e-6
