"""What the invert execution supports: each case gives "autograd"'s gradients and buffers, or a clear error first.

One test per row of the README's "What the invert execution supports" table; float64, compared
tensor by tensor to 1e-10, buffers included.
"""

from __future__ import annotations

import copy
from collections import namedtuple
from collections.abc import Callable

import pytest
import torch
from torch import nn

import revzoo
from helpers import Branch, assert_same_grads, grads_of, pairs

DIM = 6


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _one_step(model: nn.Module, execution: str, call: Callable[[nn.Module], torch.Tensor], extra=()) -> tuple:
    """One forward and backward of a copy of `model`; returns its gradients, the extra tensors' and its buffers."""
    model = copy.deepcopy(model)
    revzoo.set_execution(model, execution)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = grads_of(lambda: call(model), params + list(extra))
    names = [n for n, p in model.named_parameters() if p.requires_grad] + [f"extra[{i}]" for i in range(len(extra))]
    return grads, names, {name: buf.clone() for name, buf in model.named_buffers()}


def assert_invert_matches_autograd(model: nn.Module, call, extra=()) -> None:
    """One step under each execution from the same state: the same gradients and the same buffers after it."""
    reference, names, reference_buffers = _one_step(model, "autograd", call, extra)
    candidate, _, candidate_buffers = _one_step(model, "invert", call, extra)
    assert_same_grads(reference, candidate, names)
    assert reference_buffers.keys() == candidate_buffers.keys()
    for name, want in reference_buffers.items():
        torch.testing.assert_close(candidate_buffers[name], want, atol=1e-10, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


class Normed(nn.Module):
    """Linear, BatchNorm in train mode, dropout: running statistics change on every call."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.tanh(self.norm(self.linear(x))))


def test_batchnorm_in_train_mode_updates_running_stats_once() -> None:
    torch.manual_seed(0)
    stack = revzoo.ReversibleSequence([(Normed(DIM), Normed(DIM)) for _ in range(3)])
    x = torch.randn(5, DIM, requires_grad=True)
    assert_invert_matches_autograd(stack, lambda m: m(x), [x])
    _, _, buffers = _one_step(stack, "invert", lambda m: m(x))
    assert buffers["blocks.0.f.norm.num_batches_tracked"].item() == 1


def test_batchnorm_shared_by_every_block() -> None:
    """One BatchNorm called by all blocks: each recompute must see the statistics its own call saw."""
    torch.manual_seed(1)
    f, g = Normed(DIM), Normed(DIM)
    stack = revzoo.ReversibleSequence([(f, g)] * 3)
    x = torch.randn(5, DIM, requires_grad=True)
    assert_invert_matches_autograd(stack, lambda m: m(x), [x])


class Counting(nn.Module):
    """Its output depends on a buffer it advances on every call, so a recompute must see the forward's value."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(self.linear(x)) * self.scale.clone()  # autograd keeps the value, not the buffer
        self.scale.mul_(1.5)
        return out


def test_recompute_sees_the_buffers_its_forward_saw() -> None:
    torch.manual_seed(2)
    shared = Counting(DIM)
    stack = revzoo.ReversibleSequence([(shared, Counting(DIM)), (shared, Counting(DIM))])
    x = torch.randn(3, DIM, requires_grad=True)
    assert_invert_matches_autograd(stack, lambda m: m(x), [x])


@pytest.mark.parametrize("norm", ["spectral_norm", "parametrizations.spectral_norm", "parametrizations.weight_norm"])
def test_spectral_and_weight_norm(norm: str) -> None:
    """Spectral norm advances a power iteration on each call in train mode; the recompute must not."""
    apply = {
        "spectral_norm": nn.utils.spectral_norm,
        "parametrizations.spectral_norm": nn.utils.parametrizations.spectral_norm,
        "parametrizations.weight_norm": nn.utils.parametrizations.weight_norm,
    }[norm]
    torch.manual_seed(3)
    blocks = pairs(2, DIM)
    for f, g in blocks:
        apply(f.linear)
        apply(g.linear)
    stack = revzoo.ReversibleSequence(blocks)
    x = torch.randn(3, DIM, requires_grad=True)
    assert_invert_matches_autograd(stack, lambda m: m(x), [x])


def test_check_reversible_reports_buffer_mutation_and_restores_buffers() -> None:
    torch.manual_seed(4)
    stack = revzoo.ReversibleSequence([(Normed(DIM), Normed(DIM)) for _ in range(2)])
    before = {name: buf.clone() for name, buf in stack.named_buffers()}
    report = revzoo.check_reversible(stack, torch.randn(5, DIM, requires_grad=True))
    for name, buf in stack.named_buffers():
        assert torch.equal(buf, before[name]), name
    assert "blocks.0.f.norm.running_mean" in report.mutated_buffers
    assert "blocks.1.g.norm.num_batches_tracked" in report.mutated_buffers
    assert report.max_buffer_diff < 1e-10 and report.max_grad_diff < 1e-10
    assert "buffers changed by a call" in str(report)


class Collections(nn.Module):
    """Takes a list and a dict of tensors as keywords."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, biases: list, gates: dict) -> torch.Tensor:
        out = torch.tanh(self.linear(x) + biases[0] + biases[1][0]) * torch.sigmoid(gates["a"])
        return out * gates["meta"]["scale"]


def test_keywords_that_are_lists_and_dicts_of_tensors() -> None:
    torch.manual_seed(5)
    stack = revzoo.ReversibleSequence(
        [(Collections(DIM), Collections(DIM)) for _ in range(2)], routes={"biases": "both", "gates": "both"}
    )
    x, b0, b1, a, scale = (torch.randn(3, DIM, requires_grad=True) for _ in range(5))
    assert_invert_matches_autograd(
        stack, lambda m: m(x, biases=[b0, (b1,)], gates={"a": a, "meta": {"scale": scale}}), [x, b0, b1, a, scale]
    )


class UsesParentScale(nn.Module):
    """Uses a parameter its parent owns, held in a plain list so that it is not registered here."""

    def __init__(self, dim: int, scale: nn.Parameter) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.borrowed = [scale]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x)) * self.borrowed[0]


class Parent(revzoo.ZooModel):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(dim))
        self.stack = revzoo.ReversibleSequence(
            [(UsesParentScale(dim, self.scale), Branch(dim)), (Branch(dim), UsesParentScale(dim, self.scale))]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)


def test_parameters_a_branch_uses_but_its_parent_owns() -> None:
    torch.manual_seed(6)
    model = Parent(DIM)
    x = torch.randn(3, DIM, requires_grad=True)

    def call(m: Parent) -> torch.Tensor:
        for block in m.stack.blocks:  # deepcopy re-creates the parameter; point the branches at the copy's
            for branch in (block.f, block.g):
                if isinstance(branch, UsesParentScale):
                    branch.borrowed[0] = m.scale
        return m(x)

    assert_invert_matches_autograd(model, call, [x])


class CapturesTensor(Branch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.outside


def test_a_captured_non_leaf_tensor_is_refused_before_any_work() -> None:
    """A tensor computed by the caller and stored on a branch: its gradient cannot flow; say so at once."""
    torch.manual_seed(7)
    branch = CapturesTensor(DIM)
    stack = revzoo.ReversibleSequence([(Branch(DIM), Branch(DIM)), (Branch(DIM), branch)])
    weight = torch.randn(DIM, requires_grad=True)
    branch.outside = weight * 2
    calls = []
    stack.blocks[0].f.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(RuntimeError, match=r"block 1's g uses a tensor requiring grad.*routed to the branch"):
        stack(torch.randn(3, DIM, requires_grad=True))
    assert len(calls) == 1  # only the probe ran: no block's forward was done


class DrawsFromGenerator(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        keep = torch.rand(x.shape, generator=generator) > 0.3
        return torch.tanh(self.linear(x)) * keep


def test_a_generator_keyword() -> None:
    torch.manual_seed(8)
    stack = revzoo.ReversibleSequence(
        [(DrawsFromGenerator(DIM), DrawsFromGenerator(DIM)) for _ in range(3)], routes={"generator": "both"}
    )
    x = torch.randn(4, DIM, requires_grad=True)
    generator = torch.Generator()
    assert_invert_matches_autograd(stack, lambda m: m(x, generator=generator.manual_seed(9)), [x])
    stack(x, generator=generator.manual_seed(9)).sum().backward()
    after_invert = generator.get_state()
    revzoo.set_execution(stack, "autograd")
    stack(x, generator=generator.manual_seed(9)).sum().backward()
    assert torch.equal(after_invert, generator.get_state())  # the caller's generator advanced as under autograd


def test_an_in_place_first_op_is_refused_before_any_work() -> None:
    """`ReLU(inplace=True)` on a branch's input overwrites the stream, which "invert" must recompute."""
    stack = revzoo.ReversibleSequence(
        [(Branch(DIM), Branch(DIM)), (nn.Sequential(nn.ReLU(inplace=True), nn.Linear(DIM, DIM)), Branch(DIM))]
    )
    x = torch.randn(3, DIM)
    before = x.clone()
    with pytest.raises(RuntimeError, match=r"block 1's f changes its input .* in place.*inplace=False"):
        stack(x.requires_grad_())
    assert torch.equal(x, before)


def test_in_place_ops_inside_a_branch() -> None:
    torch.manual_seed(9)
    blocks = [(nn.Sequential(nn.Linear(DIM, DIM), nn.ReLU(inplace=True)), Branch(DIM)) for _ in range(2)]
    stack = revzoo.ReversibleSequence(blocks)
    x = torch.randn(3, DIM, requires_grad=True)
    assert_invert_matches_autograd(stack, lambda m: m(x), [x])


Data = namedtuple("Data", ["coords", "values", "mask"])


def test_namedtuple_data_with_a_stream_layout() -> None:
    torch.manual_seed(10)
    layout = revzoo.StreamLayout(stream="values", fields=Data._fields)
    stack = revzoo.ReversibleSequence(pairs(2, DIM), layout=layout)
    coords, values = torch.randn(3, DIM, requires_grad=True), torch.randn(3, DIM, requires_grad=True)
    mask = torch.ones(3, DIM)
    out = stack(Data(coords, values, mask))
    assert isinstance(out, Data) and out.coords is coords and out.mask is mask
    assert_invert_matches_autograd(stack, lambda m: m(Data(coords, values, mask)).values, [coords, values])


@pytest.mark.slow  # compiling takes about 25 s on 2 cores
def test_torch_compile_with_dropout_trains_like_eager_invert() -> None:
    """The compiled model (inductor, default settings) gives eager "invert"'s gradients with dropout in branches."""
    torch._dynamo.reset()
    torch.manual_seed(11)
    stack = revzoo.ReversibleSequence(pairs(2, DIM, dropout=0.3))
    x = torch.randn(4, DIM, requires_grad=True)
    params = list(stack.parameters())
    names = [n for n, _ in stack.named_parameters()] + ["x"]
    eager = grads_of(lambda: stack(x), params + [x])
    compiled = torch.compile(stack)
    for _ in range(2):  # the second step runs the cached graph
        assert_same_grads(eager, grads_of(lambda: compiled(x), params + [x]), names)


@pytest.mark.slow  # compiling takes a few seconds
@pytest.mark.parametrize("execution", ["invert", "autograd"])
def test_torch_compile_of_an_exact_stack(execution: str, caplog: pytest.LogCaptureFixture) -> None:
    """Compiled, an exact stack keeps eager invert's bitwise gradients (invert runs outside the graph), its range
    error, and no graph-break warning from the range check's host read."""
    torch._dynamo.reset()
    torch.manual_seed(12)
    stack = revzoo.ReversibleSequence(pairs(3, DIM, dropout=0.3 if execution == "invert" else 0.0),
                                      coupling=revzoo.Coupling(scales=(0.125, 0.125)), exact=True)
    stack.execution = execution
    x = torch.randn(4, DIM, requires_grad=True)
    params = list(stack.parameters()) + [x]
    names = [n for n, _ in stack.named_parameters()] + ["x"]
    torch.manual_seed(13)
    eager = grads_of(lambda: stack(x), params)
    compiled = torch.compile(stack)
    with caplog.at_level("WARNING", logger="torch._dynamo"):
        torch.manual_seed(13)
        got = grads_of(lambda: compiled(x), params)
    assert not [record for record in caplog.records if "Graph break" in record.getMessage()]
    if execution == "invert":
        for name, expected, actual in zip(names, eager, got):
            assert torch.equal(actual, expected), name
    else:  # inductor's float32 kernels round differently from eager's
        assert_same_grads(eager, got, names, atol=1e-5)
    with pytest.raises(OverflowError, match="the stack's input took the stream outside"):
        compiled(x.detach() * 2.0**22)
