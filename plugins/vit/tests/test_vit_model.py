"""RevViT against timm: the sequential form is timm's function; invert gradients equal autograd's."""

from __future__ import annotations

import pytest
import timm
import torch
from revzoo_vit import from_timm

import revzoo


def tiny_vit(**overrides) -> torch.nn.Module:
    """A timm ViT small enough for CPU tests: 16x16 images, 8x8 patches, width 32."""
    kwargs = {**dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5), **overrides}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)


VARIANTS = {
    "plain": {},
    "registers-avg-layerscale": dict(reg_tokens=2, global_pool="avg", init_values=0.1, no_embed_class=True),
    "prenorm-map-pool": dict(pre_norm=True, global_pool="map", class_token=False, qk_norm=True),
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_sequential_form_equals_timm(overrides):
    torch.manual_seed(0)
    vit = tiny_vit(**overrides).eval()
    model = from_timm(vit, form="sequential").eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(images), vit(images), atol=1e-6, rtol=0)
        features = model.forward_features(images)
        torch.testing.assert_close(features, vit.forward_features(images), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            model.forward_head(features, pre_logits=True), vit.forward_head(features, pre_logits=True), atol=1e-6, rtol=0
        )
    # with gradients on, through the stack's training path
    torch.testing.assert_close(model(images), vit(images), atol=1e-6, rtol=0)


def test_sequential_form_equals_timm_in_training_with_dropout():
    vit = tiny_vit(drop_path_rate=0.3, proj_drop_rate=0.2, attn_drop_rate=0.2, drop_rate=0.2).train()
    model = from_timm(vit, form="sequential").train()
    images = torch.randn(4, 3, 16, 16)
    torch.manual_seed(3)
    expected = vit(images)
    torch.manual_seed(3)
    torch.testing.assert_close(model(images), expected, atol=1e-6, rtol=0)


def test_attention_mask_and_causal_reach_attention_like_timm():
    vit = tiny_vit().eval()
    model = from_timm(vit, form="sequential").eval()
    images = torch.randn(2, 3, 16, 16)
    tokens = 1 + 4  # class token + 2x2 patches
    mask = torch.rand(2, 1, tokens, tokens) > 0.3
    mask |= torch.eye(tokens, dtype=torch.bool)  # every query sees itself
    with torch.no_grad():
        masked = model(images, attn_mask=mask)
        torch.testing.assert_close(masked, vit(images, attn_mask=mask), atol=1e-6, rtol=0)
        assert not torch.allclose(masked, model(images))
        torch.testing.assert_close(model(images, is_causal=True), vit(images, is_causal=True), atol=1e-6, rtol=0)


def test_keeps_timm_interface():
    vit = tiny_vit()
    model = from_timm(vit)
    assert model.num_classes == 5
    assert model.pretrained_cfg["architecture"] == "vit_tiny_patch16_224"
    assert model.default_cfg is model.pretrained_cfg
    assert model.get_classifier() is vit.head
    assert "pos_embed" in model.no_weight_decay()
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.revzoo_config["num_classes"] == 3
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    model.reset_classifier(0, global_pool="avg")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    assert model.revzoo_config["global_pool"] == "avg"


def _gradients(model, images, mask, execution):
    revzoo.set_execution(model, execution)
    model.zero_grad(set_to_none=True)
    for leaf in (images, mask):
        leaf.grad = None
    torch.manual_seed(7)  # same dropout, drop-path and patch-drop masks in both runs
    logits = model(images, attn_mask=mask)
    (logits * torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)).sum().backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    grads["<images>"] = images.grad.clone()
    grads["<attn_mask>"] = mask.grad.clone()
    return grads


@pytest.mark.parametrize("depth", [2, 3])
def test_invert_gradients_equal_autograd_with_dropout_and_drop_path(depth):
    torch.manual_seed(0)
    vit = tiny_vit(
        depth=depth, reg_tokens=1, init_values=0.5, drop_path_rate=0.4, proj_drop_rate=0.2,
        attn_drop_rate=0.2, drop_rate=0.2, pos_drop_rate=0.1,
    ).double()
    model = from_timm(vit, form="reversible").train()
    images = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    tokens = 2 + 4
    mask = (0.1 * torch.randn(1, 1, tokens, tokens, dtype=torch.float64)).requires_grad_()

    reference = _gradients(model, images, mask, "autograd")
    inverted = _gradients(model, images, mask, "invert")

    assert reference.keys() == inverted.keys()
    for name, grad in reference.items():
        assert grad.abs().sum() > 0, f"{name}: zero gradient, the comparison would prove nothing"
        torch.testing.assert_close(inverted[name], grad, atol=1e-10, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # the randomness is real: another seed gives another function
    torch.manual_seed(8)
    other = model(images, attn_mask=mask)
    torch.manual_seed(7)
    assert not torch.allclose(other, model(images, attn_mask=mask))
