"""ReversibleSequence.intermediates: the output after chosen blocks is what a stack of the first blocks returns."""

from __future__ import annotations

import pytest
import torch

import revzoo
from helpers import pairs

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
