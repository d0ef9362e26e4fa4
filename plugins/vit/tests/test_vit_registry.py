"""The vit plugin's registered names: creation, timm kwargs, clear errors, a few training steps."""

from __future__ import annotations

import pytest
import revzoo_vit
import torch
from revzoo_vit import RevViT

import revzoo


@pytest.fixture
def vit_plugin():
    name = revzoo.register_plugin(revzoo_vit, name="vit")
    try:
        yield name
    finally:
        revzoo.unregister_plugin(name)


def test_names_are_registered(vit_plugin):
    names = revzoo.list_models("vit*")
    for name in ("vit-tiny", "vit-small", "vit-base"):
        assert name in names and f"{name}-rev" in names
    assert "timm" in revzoo.list_models()
    assert "timm" in revzoo.list_formats()


def test_create_named_variant_with_overrides(vit_plugin):
    model = revzoo.create("vit-small-rev", img_size=32, depth=2, num_classes=7)
    assert isinstance(model, RevViT)
    assert revzoo.get_form(model) == "reversible"
    assert model.embed_dim == 384 and len(model.blocks.blocks) == 2
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert model.revzoo_config["depth"] == 2


def test_create_any_timm_vit_by_name_passes_kwargs(vit_plugin):
    model = revzoo.create("timm/vit_small_patch16_224", form="reversible", num_classes=10, img_size=64)
    assert revzoo.get_form(model) == "reversible"
    assert model.revzoo_config["model_name"] == "vit_small_patch16_224"
    assert model.patch_embed.img_size == (64, 64)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("timm/resnet18", {}, "resnet18"),
        ("timm/vit_smal_patch16_224", {}, "did you mean"),
        ("timm/vit_tiny_patch16_224", {"pretrained": True}, "pretrained"),
        ("timm/vit_tiny_patch16_224", {"checkpoint_path": "w.pth"}, "checkpoint_path"),
        ("timm/vit_tiny_patch16_224", {"not_a_timm_kwarg": 1}, "not_a_timm_kwarg"),
        ("timm/vit_relpos_small_patch16_224", {}, "VisionTransformer"),
        ("timm/deit_tiny_distilled_patch16_224", {}, "VisionTransformerDistilled"),
        ("timm", {}, "timm model name"),
    ],
)
def test_unusable_timm_names_and_kwargs_are_config_errors(vit_plugin, name, overrides, expected):
    with pytest.raises(revzoo.ConfigError, match=expected):
        revzoo.create(name, img_size=32, depth=1, **overrides)


@pytest.mark.parametrize("name", ["vit-tiny-rev", "timm/vit_tiny_patch16_224"])
def test_an_option_timm_does_not_take_is_an_unknown_option_error(vit_plugin, name):
    with pytest.raises(revzoo.UnknownOptionError, match="not_a_timm_kwarg") as caught:
        revzoo.create(name, img_size=32, depth=1, not_a_timm_kwarg=1)
    assert isinstance(caught.value, TypeError)  # as revzoo's closed configs and timm's constructors raise


def test_a_few_training_steps_of_vit_tiny_rev(vit_plugin):
    torch.manual_seed(0)
    model = revzoo.create("vit-tiny-rev", img_size=32, depth=3, num_classes=4, drop_path_rate=0.1).train()
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(param.grad is not None for param in model.parameters())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["vit-tiny", "timm"])
def test_small_instance_runs_on_its_example_inputs(vit_plugin, name):
    spec = revzoo.get_architecture(name)
    model = revzoo.create(name, form="reversible", **{**spec.small, "depth": 2})
    args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    assert model(*args, **kwargs).shape == (4, 1000)


@pytest.mark.parametrize("name", ["timm/eva02_tiny_patch14_224", "timm/beit_base_patch16_224",
                                  "timm/vit_relpos_small_patch16_224", "timm/deit_tiny_distilled_patch16_224",
                                  "timm/naflexvit_base_patch16_gap", "timm/vit_small_patch16_18x2_224"])
def test_refused_timm_classes_are_named_in_the_error(vit_plugin, name):
    with pytest.raises(revzoo.ConfigError) as caught:
        revzoo.create(name, img_size=32, depth=1)
    message = str(caught.value)
    assert "exactly one timm class, timm.models.vision_transformer.VisionTransformer" in message
    for refused in ("Eva (EVA-02", "Beit", "VisionTransformerRelPos", "VisionTransformerDistilled", "NaFlexVit",
                    "ParallelThingsBlock"):
        assert refused in message
