"""DALL-E plugin: the reversible form's "invert" gradients equal plain autograd's, with dropout on (float64)."""

from __future__ import annotations

import pytest
import torch
from revzoo_dalle import DalleTransformer, build_dalle

import revzoo

TINY = {
    "dim": 16, "heads": 2, "dim_head": 8, "num_text_tokens": 12, "text_seq_len": 4,
    "image_size": 16, "vae_num_layers": 2, "num_image_tokens": 8, "vae_codebook_dim": 8, "vae_hidden_dim": 4,
    "attn_dropout": 0.2, "ff_dropout": 0.2,
}


def _grads(model: torch.nn.Module, run, inputs: list[torch.Tensor], execution: str) -> list[torch.Tensor]:
    revzoo.set_execution(model, execution)
    for tensor in [*model.parameters(), *inputs]:
        tensor.grad = None
    torch.manual_seed(1234)  # the same dropout masks in both runs
    run().backward()
    return [t.grad.clone() for t in [*model.parameters(), *inputs] if t.requires_grad]


def _assert_same(reference: list[torch.Tensor], inverted: list[torch.Tensor]) -> None:
    assert len(reference) == len(inverted)
    assert all(g.abs().max() > 0 for g in reference[:-1])  # the comparison can fail
    for expected, actual in zip(reference, inverted):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 3, "attn_types": ["full", "axial_row", "conv_like"], "shift_tokens": True, "rotary_emb": True},
        {"depth": 2, "attn_types": ["axial_col"], "shift_tokens": False, "rotary_emb": False, "stable": True,
         "sandwich_norm": True, "share_input_output_emb": True, "shared_attn_ids": [0, 0], "shared_ff_ids": [0, 0]},
    ],
)
def test_dalle_loss_gradients_invert_equal_autograd(options: dict) -> None:
    torch.manual_seed(0)
    model = build_dalle(form="reversible", **TINY, **options).double().train()
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(0, 12, (2, 4), generator=generator)
    image = torch.randint(0, 8, (2, 16), generator=generator)
    run = lambda: model(text, image, return_loss=True)  # noqa: E731
    _assert_same(_grads(model, run, [], "autograd"), _grads(model, run, [], "invert"))


@pytest.mark.parametrize("depth", [2, 3])
def test_transformer_input_and_mask_context_gradients(depth: int) -> None:
    """Input embeddings that require grad, a key mask, rotary and token shift, at odd and even depth."""
    torch.manual_seed(0)
    transformer = DalleTransformer(
        dim=16, depth=depth, text_len=5, image_size=4, heads=2, dim_head=8, attn_dropout=0.2, ff_dropout=0.2,
        attn_types=("conv_like", "full"), shift_tokens=True, rotary_emb=True,
    ).double().train()
    x = torch.randn(2, 18, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 18, dtype=torch.bool)
    mask[1, 2] = False
    weights = torch.randn(2, 18, 16, dtype=torch.float64)
    run = lambda: (transformer(x, mask=mask) * weights).sum()  # noqa: E731
    reference, inverted = _grads(transformer, run, [x], "autograd"), _grads(transformer, run, [x], "invert")
    assert reference[-1].abs().max() > 0
    _assert_same(reference, inverted)


def test_check_reversible_reports_exact_inversion_for_the_whole_model() -> None:
    torch.manual_seed(0)
    model = build_dalle(form="reversible", **TINY, depth=3, attn_types=["conv_like", "axial_row"]).double().train()
    text = torch.randint(0, 12, (2, 4))
    image = torch.randint(0, 8, (2, 16))
    report = revzoo.check_reversible(model, text, image)
    assert len(report.blocks) == 3
    assert report.max_reconstruction_error < 1e-10 and report.max_grad_diff < 1e-10
