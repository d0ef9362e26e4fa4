"""The engine's contract beyond gradients: forms, validation, memory, RNG, autocast, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import revzoo
from helpers import Branch, live_peak_bytes, pairs, saved_bytes

DIM = 8


@pytest.mark.parametrize("execution,grows", [("invert", False), ("autograd", True)])
def test_memory_kept_for_backward_does_not_grow_with_depth(execution: str, grows: bool) -> None:
    x = torch.randn(16, 64, DIM, requires_grad=True)
    stacks = [revzoo.ReversibleSequence(pairs(depth, DIM), execution=execution) for depth in (2, 16)]
    shallow, deep = (saved_bytes(lambda stack=stack: stack(x)) for stack in stacks)
    if grows:
        assert deep > 6 * shallow  # the same measurement does see growth when activations are stored
    else:
        assert deep == shallow


def test_the_first_step_under_invert_peaks_within_one_block_of_later_steps() -> None:
    """The first call probes every block with grad on: it must free each branch's graph as it goes, or a model
    sized for invert's memory runs out on step one."""
    torch.manual_seed(0)
    x = torch.randn(16, 64, DIM * 8)

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(DIM * 8, DIM * 32), nn.GELU(), nn.Linear(DIM * 32, DIM * 8))

    one_block = live_peak_bytes(lambda: revzoo.ReversibleSequence([(mlp(), mlp())], execution="autograd")(x).sum()
                                .backward())
    stack = revzoo.ReversibleSequence([(mlp(), mlp()) for _ in range(8)])
    for p in stack.parameters():  # gradients allocated once, before: only activations differ between the steps
        p.grad = torch.zeros_like(p)
    first, later = (live_peak_bytes(lambda: stack(x).sum().backward()) for _ in range(2))
    assert first <= later + one_block / 8, (first, later, one_block)  # was one branch graph more than later
    stack.execution = "autograd"
    assert first < live_peak_bytes(lambda: stack(x).sum().backward()) / 3


def test_sequential_form_is_the_classic_residual_stack() -> None:
    torch.manual_seed(0)
    blocks = pairs(3, DIM, dropout=0.0)
    stack = revzoo.ReversibleSequence(blocks, form="sequential")
    x = torch.randn(2, DIM)
    expected = x
    for f, g in blocks:
        expected = expected + f(expected)
        expected = expected + g(expected)
    torch.testing.assert_close(stack(x), expected)


def test_reversible_form_matches_its_definition() -> None:
    torch.manual_seed(0)
    blocks = pairs(3, DIM, dropout=0.0)
    stack = revzoo.ReversibleSequence(blocks)
    x = torch.randn(2, DIM, requires_grad=True)
    y1 = y2 = x
    for f, g in blocks:
        y1 = y1 + f(y2)
        y2 = y2 + g(y1)
    torch.testing.assert_close(stack(x), (y1 + y2) / 2)


def test_forms_share_parameters_and_keys() -> None:
    stack = revzoo.ReversibleSequence(pairs(2, DIM))
    keys = list(stack.state_dict())
    assert keys[0].startswith("blocks.0.f.")
    stack.form = "sequential"
    assert list(stack.state_dict()) == keys
    with pytest.raises(ValueError, match="unknown form 'reversable'"):
        stack.form = "reversable"
    with pytest.raises(ValueError, match="unknown execution"):
        stack.execution = "fast"


def test_no_grad_runs_a_plain_loop_with_the_same_output() -> None:
    torch.manual_seed(0)
    stack = revzoo.ReversibleSequence(pairs(3, DIM, dropout=0.0))
    x = torch.randn(2, DIM)
    with torch.no_grad():
        plain = stack(x)
    assert plain.grad_fn is None
    with torch.inference_mode():
        torch.testing.assert_close(stack(x), plain)
    torch.testing.assert_close(stack(x.requires_grad_()).detach(), plain)


def test_second_backward_is_a_clear_error() -> None:
    stack = revzoo.ReversibleSequence(pairs(2, DIM))
    out = stack(torch.randn(2, DIM, requires_grad=True)).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        out.backward()


def test_caller_rng_stream_is_untouched_by_recompute() -> None:
    stack = revzoo.ReversibleSequence(pairs(3, DIM))
    x = torch.randn(2, DIM, requires_grad=True)
    draws = []
    for execution in ("autograd", "invert"):
        stack.execution = execution
        torch.manual_seed(7)
        stack(x).sum().backward()
        draws.append(torch.rand(4))
    torch.testing.assert_close(draws[0], draws[1])


def test_bf16_autocast_recompute_uses_forward_autocast() -> None:
    """Under CPU bf16 autocast, "invert" gradients follow "autograd" to bf16 precision; streams stay float32."""
    torch.manual_seed(0)
    stack = revzoo.ReversibleSequence(pairs(4, DIM, dropout=0.1))
    x = torch.randn(4, DIM, requires_grad=True)
    grads = {}
    for execution in ("autograd", "invert"):
        stack.execution = execution
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = stack(x)
        assert out.dtype == torch.float32
        grads[execution] = torch.autograd.grad(out.sum(), [x, *stack.parameters()])
    for reference, candidate in zip(grads["autograd"], grads["invert"]):
        # documented tolerance: bf16 has 8 mantissa bits; reconstruction adds float32 round-off only
        torch.testing.assert_close(candidate, reference, atol=2e-2, rtol=2e-2)


def test_route_validation() -> None:
    with pytest.raises(ValueError, match="routes has 3 entries but the stack has 2 blocks"):
        revzoo.ReversibleSequence(pairs(2, DIM), routes=[{"mask": "f"}] * 3)
    with pytest.raises(ValueError, match="names neither f nor g"):
        revzoo.ReversibleSequence(pairs(2, DIM), routes={"mask": (False, False)})
    with pytest.raises(ValueError, match="expected 'f', 'g' or 'both'"):
        revzoo.ReversibleSequence(pairs(2, DIM), routes={"mask": "h"})
    stack = revzoo.ReversibleSequence(pairs(2, DIM), routes={"mask": "f"})
    with pytest.raises(TypeError, match=r"\['cache'\] reach no block"):
        stack(torch.randn(2, DIM), cache={})


def test_block_and_layout_validation() -> None:
    with pytest.raises(TypeError, match=r"blocks\[0\] must be an \(f, g\) pair"):
        revzoo.ReversibleSequence([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="not one of its fields"):
        revzoo.StreamLayout(stream="x", fields=("a", "b"))
    stack = revzoo.ReversibleSequence(pairs(1, DIM), layout=revzoo.StreamLayout(stream="v", fields=("c", "v")))
    with pytest.raises(TypeError, match="expects a tuple of 2"):
        stack((torch.randn(2, DIM),))
    with pytest.raises(TypeError, match="takes one tensor"):
        revzoo.ReversibleSequence(pairs(1, DIM))((torch.randn(2, DIM),))


def test_form_helpers_on_a_model() -> None:
    model = nn.Sequential(revzoo.ReversibleSequence(pairs(1, DIM)), revzoo.ReversibleSequence(pairs(1, DIM)))
    assert revzoo.get_form(revzoo.set_form(model, "sequential")) == "sequential"
    model[0].form = "reversible"
    with pytest.raises(ValueError, match="mixes forms"):
        revzoo.get_form(model)
    with pytest.raises(TypeError, match="contains no revzoo.ReversibleSequence"):
        revzoo.set_form(nn.Linear(2, 2), "sequential")


def test_non_tensor_kwargs_pass_through() -> None:
    seen = []

    class Recorder(Branch):
        def forward(self, x, cache=None):
            seen.append(cache)
            return super().forward(x)

    stack = revzoo.ReversibleSequence([(Recorder(DIM), Recorder(DIM))], routes={"cache": "both"})
    cache = {"step": 3}
    stack(torch.randn(2, DIM, requires_grad=True), cache=cache).sum().backward()
    assert all(item is cache for item in seen) and len(seen) == 6  # the first call probes f, g (see _probe)
    seen.clear()
    stack(torch.randn(2, DIM, requires_grad=True), cache=cache).sum().backward()
    assert all(item is cache for item in seen) and len(seen) == 4  # forward f, g; recompute g, f


@pytest.mark.parametrize("form,execution", [("reversible", "invert"), ("reversible", "autograd"), ("sequential", "invert")])
def test_branch_output_of_the_wrong_shape_is_a_clear_error(form: str, execution: str) -> None:
    """Broadcasting `x + f(x)` would silently grow the stream; every path refuses it instead."""
    stack = revzoo.ReversibleSequence([(nn.Linear(DIM, DIM), nn.Linear(DIM, 1))], form=form, execution=execution)
    with pytest.raises(ValueError, match=r"block 0's g returned \(2, 1\) for a stream of shape \(2, 8\)"):
        stack(torch.randn(2, DIM, requires_grad=True))
