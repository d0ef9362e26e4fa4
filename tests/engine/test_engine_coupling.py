"""Scaled and swapped couplings, adapters, and exact (fixed-point) arithmetic: invert == autograd, bit for bit
where the arithmetic is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import revzoo
from helpers import assert_same_grads, grads_of, pairs, saved_bytes
from revzoo.engine._coupling import FRACTION_BITS, RANGE_BITS, pack_low_bits, unpack_low_bits

DIM = 6


def _grads(stack: revzoo.ReversibleSequence, x: torch.Tensor, execution: str, **kwargs) -> list[torch.Tensor]:
    stack.execution = execution
    return grads_of(lambda: stack(x, **kwargs), [*stack.parameters(), x])


def _names(stack: revzoo.ReversibleSequence) -> list[str]:
    return [n for n, _ in stack.named_parameters()] + ["x"]


# --- the coupling's definition ---------------------------------------------------------------------------

@pytest.mark.parametrize("scales", [(0.0, 1.0), (1.0, float("inf")), (float("nan"), 1.0)])
def test_a_scale_that_cannot_be_inverted_is_refused_at_construction(scales) -> None:
    with pytest.raises(ValueError, match="cannot be inverted"):
        revzoo.ReversibleSequence(pairs(1, DIM), coupling=revzoo.Coupling(scales=scales))


def test_exact_refuses_scales_that_are_not_powers_of_two_and_names_the_nearest() -> None:
    with pytest.raises(ValueError, match=r"λ = 0.1 is not one \(nearest: 0.125\)"):
        revzoo.ReversibleSequence(pairs(1, DIM), coupling=revzoo.Coupling(scales=(0.1, 0.5)), exact=True)
    stack = revzoo.ReversibleSequence(pairs(1, DIM), coupling=revzoo.Coupling(scales=(0.1, 0.5)))
    with pytest.raises(ValueError, match="exact=True supports"):
        stack.exact = True
    assert stack.exact is False  # nothing changed


def test_default_coupling_is_the_plain_reversible_form_bit_for_bit() -> None:
    torch.manual_seed(0)
    branches = pairs(3, DIM, dropout=0.0)
    x = torch.randn(4, DIM)
    plain = revzoo.ReversibleSequence(branches)(x)
    explicit = revzoo.ReversibleSequence(branches, coupling=revzoo.Coupling(scales=(1, 1)))(x)
    y1 = y2 = x
    for f, g in branches:
        y1 = y1 + f(y2)
        y2 = y2 + g(y1)
    assert torch.equal(plain, (y1 + y2) / 2) and torch.equal(explicit, plain)


def test_scaled_swapped_coupling_matches_its_definition() -> None:
    torch.manual_seed(0)
    branches = pairs(3, DIM, dropout=0.0)
    x = torch.randn(4, DIM, dtype=torch.float64)
    stack = revzoo.ReversibleSequence(branches, coupling=revzoo.Coupling((0.5, 0.25), swap=True, output="f")).double()
    y1 = y2 = x
    for f, g in branches:
        y1 = 0.5 * y1 + f(y2)
        y2 = 0.25 * y2 + g(y1)
        last_f = y1
        y1, y2 = y2, y1
    torch.testing.assert_close(stack(x), last_f, rtol=0, atol=0)


# --- float arithmetic: invert == autograd at the scales preserving conversion uses ----------------------

def _without_last_g(stack: revzoo.ReversibleSequence, grads: list) -> tuple[list, list[str]]:
    """With output="f" the last block's g never reaches the output: its gradients are None in both executions."""
    last = stack.blocks[-1]
    last_g = {id(p) for p in (last.adapter if last.adapter is not None else last.g).parameters()}
    keep = [i for i, p in enumerate([*stack.parameters(), None]) if p is None or id(p) not in last_g]
    return [grads[i] for i in keep], [_names(stack)[i] for i in keep]


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("swap, output", [(False, "mean"), (True, "mean"), (True, "f")])
@pytest.mark.parametrize("depth", [2, 3])
def test_scaled_invert_equals_autograd_with_dropout(scale: float, swap: bool, output: str, depth: int) -> None:
    torch.manual_seed(depth)
    coupling = revzoo.Coupling((scale, scale), swap=swap, output=output)
    stack = revzoo.ReversibleSequence(pairs(depth, DIM), coupling=coupling).double()
    x = torch.randn(4, DIM, dtype=torch.float64, requires_grad=True)
    reference, candidate = _grads(stack, x, "autograd"), _grads(stack, x, "invert")
    if output == "f":
        assert all(r is None and c is None for r, c in zip(reference, candidate) if r is None or c is None)
        (reference, names), (candidate, _) = _without_last_g(stack, reference), _without_last_g(stack, candidate)
    else:
        names = _names(stack)
    assert_same_grads(reference, candidate, names)


def test_check_reversible_reports_the_float_drift_at_small_scales() -> None:
    torch.manual_seed(0)
    stack = revzoo.ReversibleSequence(pairs(6, 8), coupling=revzoo.Coupling((0.125, 0.125), swap=True))
    report = revzoo.check_reversible(stack, torch.randn(4, 8))
    assert not report.bitwise and report.max_reconstruction_error > 1e-2  # float32 inversion at 1/8: garbage
    stack.exact = True
    exact = revzoo.check_reversible(stack, torch.randn(4, 8))
    assert exact.bitwise and exact.max_reconstruction_error == 0 and exact.max_grad_diff == 0


# --- exact arithmetic -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", range(1, 9))
def test_side_bits_round_trip_for_negative_and_positive_grid_values(shift: int) -> None:
    units = torch.randint(-(2**40), 2**40, (37,), dtype=torch.int64).double()
    values = units * 2.0**-FRACTION_BITS
    low = unpack_low_bits(pack_low_bits(values, shift), shift, values)
    assert torch.equal(low, units - torch.floor(units / 2**shift) * 2**shift)
    assert pack_low_bits(values, shift).numel() == -(-37 // 8) * shift  # shift bits per element, packed by eights


@pytest.mark.parametrize(
    "dtype, autocast", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False), (torch.float64, False)]
)
def test_exact_reconstruction_is_bitwise_at_depth(dtype: torch.dtype, autocast: bool) -> None:
    torch.manual_seed(0)
    coupling = revzoo.Coupling((0.125, 0.125), swap=True)
    stack = revzoo.ReversibleSequence(pairs(24, 8, dropout=0.1), coupling=coupling, exact=True).to(dtype)
    x = torch.randn(4, 8, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        report = revzoo.check_reversible(stack, x)
    assert report.bitwise, str(report)
    assert report.max_grad_diff == 0, str(report)


@pytest.mark.parametrize("scale, swap", [(1.0, False), (0.5, True), (0.125, True)])
def test_exact_invert_gradients_equal_exact_autograd_bitwise_in_float32(scale: float, swap: bool) -> None:
    torch.manual_seed(3)
    coupling = revzoo.Coupling((scale, scale), swap=swap)
    stack = revzoo.ReversibleSequence(pairs(16, DIM, dropout=0.1), coupling=coupling, exact=True)
    x = torch.randn(4, DIM, requires_grad=True)
    reference, candidate = _grads(stack, x, "autograd"), _grads(stack, x, "invert")
    for name, want, got in zip(_names(stack), reference, candidate):
        assert want.abs().max() > 0, name
        assert torch.equal(want, got), f"{name}: {(want - got).abs().max():.3e}"


@pytest.mark.parametrize("route", ["f", "both"])
def test_exact_float64_gradients_equal_autograd_bitwise_with_routes(route: str) -> None:
    """Bitwise needs invert to sum each gradient in autograd's order: the input's as x1's + x2's, and a keyword
    tensor's branch by branch across blocks (summed per block, both were an ulp off in float64)."""
    torch.manual_seed(4)
    stack = revzoo.ReversibleSequence(
        pairs(4, DIM), routes={"gate": route}, coupling=revzoo.Coupling((0.5, 0.25), swap=True), exact=True
    ).double()
    x = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    tensors = [*stack.parameters(), x, gate]
    names = [*_names(stack), "gate"]
    grads = {}
    for execution in ("autograd", "invert"):
        stack.execution = execution
        grads[execution] = grads_of(lambda: stack(x, gate=gate), tensors)
    assert_same_grads(grads["autograd"], grads["invert"], names, atol=0)


def test_exact_output_stays_close_to_the_float_function() -> None:
    torch.manual_seed(5)
    stack = revzoo.ReversibleSequence(pairs(8, DIM, dropout=0.0), coupling=revzoo.Coupling((0.5, 0.5), swap=True))
    x = torch.randn(4, DIM)
    with torch.no_grad():
        floating = stack(x)
        stack.exact = True
        exact = stack(x)
    assert exact.dtype == x.dtype
    torch.testing.assert_close(exact, floating, rtol=0, atol=1e-6)


class _Blowup(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("execution", ["invert", "autograd"])
def test_leaving_the_grid_range_is_an_error_naming_block_and_branch(execution: str) -> None:
    branches = [(nn.Identity(), _Blowup(0.0)), (nn.Identity(), _Blowup(0.0)), (_Blowup(0.0), _Blowup(float("nan")))]
    stack = revzoo.ReversibleSequence([(nn.Linear(2, 2), nn.Linear(2, 2))] * 2 + branches[2:], exact=True)
    stack.execution = execution
    x = torch.randn(3, 2, requires_grad=True)
    with pytest.raises(OverflowError, match="block 2's g branch"):
        stack(x)
    with pytest.raises(OverflowError, match="the stack's input"):
        stack(torch.full((3, 2), 2.0**RANGE_BITS))


def test_exact_scale_one_keeps_backward_memory_flat_in_depth() -> None:
    x = torch.randn(16, 64, 8, requires_grad=True)
    stacks = [revzoo.ReversibleSequence(pairs(depth, 8), exact=True) for depth in (2, 16)]
    shallow, deep = (saved_bytes(lambda stack=stack: stack(x)) for stack in stacks)
    assert deep == shallow


def test_sequential_form_ignores_coupling_and_exact() -> None:
    torch.manual_seed(6)
    branches = pairs(2, DIM, dropout=0.0)
    x = torch.randn(2, DIM)
    plain = revzoo.ReversibleSequence(branches, form="sequential")(x)
    other = revzoo.ReversibleSequence(branches, form="sequential", coupling=revzoo.Coupling((0.5, 0.5), True), exact=True)
    assert torch.equal(other(x), plain)


# --- adapters: F = the whole block, G = an adapter ---------------------------------------------------------

class _Adapter(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(dim, 3), nn.Linear(3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.tanh(self.down(x)))


@pytest.mark.parametrize("exact", [False, True])
def test_adapter_coupling_invert_equals_autograd(exact: bool) -> None:
    torch.manual_seed(7)
    stack = revzoo.ReversibleSequence(
        pairs(3, DIM), routes={"gate": "g"}, coupling=revzoo.Coupling((0.5, 0.5), swap=True, output="f"), exact=exact
    ).double()
    stack.set_adapters([_Adapter(DIM).double() for _ in range(3)])
    x = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    tensors = [*stack.parameters(), x, gate]
    names = [n for n, _ in stack.named_parameters()] + ["x", "gate"]
    grads = {}
    for execution in ("autograd", "invert"):
        stack.execution = execution
        grads[execution] = grads_of(lambda: stack(x, gate=gate), tensors)
    unused = [i for i, name in enumerate(names) if name.startswith("blocks.2.adapter.")]  # output="f": last G unused
    assert unused and all(grads[e][i] is None for e in grads for i in unused)
    used = [i for i in range(len(names)) if i not in unused]
    assert_same_grads(*([grads[e][i] for i in used] for e in ("autograd", "invert")), [names[i] for i in used])
    assert any(".adapter." in names[i] for i in used)


def test_zero_adapters_and_small_scales_keep_the_sequential_function() -> None:
    torch.manual_seed(8)
    stack = revzoo.ReversibleSequence(pairs(4, DIM, dropout=0.0), form="sequential")
    x = torch.randn(3, DIM)
    with torch.no_grad():
        sequential = stack(x)
        zero = [nn.Linear(DIM, DIM) for _ in range(4)]
        for module in zero:
            nn.init.zeros_(module.weight), nn.init.zeros_(module.bias)
        stack.set_adapters(zero)
        stack.form = "reversible"
        gaps = {}
        for start in ("copy", "zero"):
            for scale in (0.5, 0.125, 2.0**-8):
                stack.coupling = revzoo.Coupling((scale, scale), swap=True, output="f", start=start)
                gaps[start, scale] = (stack(x) - sequential).abs().max().item()
    for start in ("copy", "zero"):
        assert gaps[start, 2.0**-8] < gaps[start, 0.125] < gaps[start, 0.5]
    assert gaps["zero", 2.0**-8] < 1e-3  # (0, x): only λβ·x terms remain
    assert gaps["copy", 2.0**-8] > 10 * gaps["zero", 2.0**-8]  # (x, x): the first block's λ·x stays in the F stream


def test_zoo_models_answer_to_exact() -> None:
    class Net(revzoo.ZooModel):
        def __init__(self) -> None:
            super().__init__()
            self.a = revzoo.ReversibleSequence(pairs(1, DIM))
            self.b = revzoo.ReversibleSequence(pairs(1, DIM))

    net = Net()
    assert net.exact is False
    net.exact = True
    assert net.a.exact and net.b.exact and net.exact
