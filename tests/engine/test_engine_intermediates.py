"""ReversibleSequence.intermediates: the output after chosen blocks is what a stack of the first blocks returns."""

from __future__ import annotations

import pytest
import torch

import revzoo
from helpers import grads_of, pairs, saved_bytes

STACKS = {
    "sequential": dict(form="sequential"),
    "reversible": dict(form="reversible"),
    "swap-output-f-zero-start": dict(coupling=revzoo.Coupling(scales=(0.5, 2.0), swap=True, output="f", start="zero")),
    "exact": dict(coupling=revzoo.Coupling(scales=(0.5, 1.0)), exact=True),
}


@pytest.mark.parametrize("options", STACKS.values(), ids=STACKS.keys())
def test_output_after_a_block_is_the_output_of_the_first_blocks(options):
    torch.manual_seed(0)
    blocks = pairs(4, 6, dropout=0.0)
    stack = revzoo.ReversibleSequence(blocks, routes={"scale": "both"}, **options)
    x, scale = torch.randn(3, 6), torch.randn(3, 6)
    taken = stack.intermediates(x, [2, 0, -1, 0], scale=scale)
    assert len(taken) == 3  # ascending, each block once, as timm takes them
    for tensor, depth in zip(taken, (1, 3, 4)):
        first = revzoo.ReversibleSequence(blocks[:depth], routes={"scale": "both"}, **options)
        torch.testing.assert_close(tensor, first(x, scale=scale), atol=0, rtol=0)


def test_with_a_layout_each_output_carries_the_context():
    layout = revzoo.StreamLayout(stream="x", fields=("x", "mask"))
    stack = revzoo.ReversibleSequence(pairs(2, 4, dropout=0.0), layout=layout)
    x, mask = torch.randn(2, 4), torch.ones(2, 4)
    (out,) = stack.intermediates((x, mask), [1])
    torch.testing.assert_close(out[0], stack((x, mask))[0], atol=0, rtol=0)
    assert out[1] is mask


@pytest.mark.parametrize("indices", [[4], [-5], []])
def test_indices_out_of_range_are_an_index_error(indices):
    stack = revzoo.ReversibleSequence(pairs(4, 6))
    with pytest.raises(IndexError, match="out of range for a stack of 4 blocks"):
        stack.intermediates(torch.randn(2, 6), indices)


def _tapped_grads(stack, x, scale, indices, execution, use):
    """Gradients of a fixed projection of the outputs after `indices` that `use` picks (positions in the result)."""
    stack.execution = execution
    tensors = [*stack.parameters(), x, scale]

    def run():
        taken = stack.intermediates(x, indices, scale=scale)
        return torch.cat([taken[position].flatten() for position in use])

    return grads_of(run, tensors)


REVERSIBLE = {name: options for name, options in STACKS.items() if name != "sequential"}  # two executions


@pytest.mark.parametrize("options", REVERSIBLE.values(), ids=REVERSIBLE.keys())
@pytest.mark.parametrize("use", [(0, 1, 2), (0,), (1,)], ids=["all", "first-only", "middle-only"])
def test_invert_gives_autograds_gradients_through_the_outputs_taken(options, use):
    """Gradients reach the blocks through every output taken, also when the loss leaves the last one out (its block's
    backward never runs, so inversion starts at the taken block)."""
    torch.manual_seed(1)
    stack = revzoo.ReversibleSequence(pairs(5, 6, dropout=0.2), routes={"scale": "both"}, **options).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    indices = [0, 2, 3]
    used_blocks = max(indices[position] for position in use) + 1
    names = [n for n, _ in stack.named_parameters()] + ["x", "scale"]
    reference = _tapped_grads(stack, x, scale, indices, "autograd", use)
    candidate = _tapped_grads(stack, x, scale, indices, "invert", use)
    keep = [i for i, name in enumerate(names) if not name.startswith("blocks.") or int(name.split(".")[1]) < used_blocks]
    if options.get("coupling", revzoo.Coupling()).output == "f":  # the last used block's g reaches no output
        last_g = f"blocks.{used_blocks - 1}.g."
        assert all(reference[i] is None and candidate[i] is None for i, n in enumerate(names) if n.startswith(last_g))
        keep = [i for i in keep if not names[i].startswith(last_g)]
    unused = [i for i in range(len(names)) if i not in keep]
    assert all(reference[i] is None and candidate[i] is None for i in unused if names[i].startswith("blocks."))
    for i in keep:  # exact too: a stream used by a block and an output sums its three gradients in another order
        torch.testing.assert_close(candidate[i], reference[i], atol=1e-10, rtol=0, msg=lambda m, n=names[i]: f"{n}: {m}")
        assert reference[i].abs().max() > 0, names[i]


def test_invert_keeps_two_streams_per_output_taken_not_the_blocks_activations() -> None:
    def saved(depth: int, execution: str) -> int:
        """Bytes autograd keeps between the forward taking three outputs and the backward through them."""
        stack = revzoo.ReversibleSequence(pairs(depth, 8), execution=execution)
        x = torch.randn(16, 64, 8, requires_grad=True)
        return saved_bytes(lambda: sum(t.sum() for t in stack.intermediates(x, [0, depth // 2, depth - 1])))

    assert saved(16, "invert") == saved(4, "invert")
    assert saved(16, "autograd") > 3 * saved(4, "autograd")
