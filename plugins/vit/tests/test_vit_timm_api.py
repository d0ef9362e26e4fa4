"""timm's model API on RevViT, against timm's own VisionTransformer on the same weights (sequential form)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from revzoo_vit import from_timm
from timm.data import resolve_model_data_config
from timm.models._features import FeatureGetterNet

import revzoo
from helpers import assert_same_grads, grads_of


def tiny_vit(**overrides) -> torch.nn.Module:
    kwargs = {**dict(img_size=16, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5), **overrides}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)


def pair(**overrides) -> tuple[torch.nn.Module, revzoo.ZooModel]:
    """timm's model and a sequential RevViT sharing its weights, both in eval mode."""
    torch.manual_seed(0)
    vit = tiny_vit(**overrides).eval()
    return vit, from_timm(vit, form="sequential").eval()


def assert_same(expected, actual) -> None:
    """Compares nested tuples/lists/dicts of tensors exactly as timm returns them."""
    assert type(expected) is type(actual)
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        for key in expected:
            assert_same(expected[key], actual[key])
    else:
        assert len(expected) == len(actual)
        for left, right in zip(expected, actual):
            assert_same(left, right)


CALLS = {
    "defaults": {},
    "last-2": dict(indices=2),
    "listed-negative-norm": dict(indices=[0, -1], norm=True),
    "stop-early-nlc": dict(indices=[1], stop_early=True, output_fmt="NLC"),
    "prefix-tokens": dict(indices=[2, 0], return_prefix_tokens=True),
    "only": dict(indices=1, intermediates_only=True),
    "dict": dict(indices=[1], output_dict=True, return_prefix_tokens=True),
    "dict-only": dict(output_dict=True, intermediates_only=True),
}
MODELS = {"class-token": {}, "registers-no-class-avg": dict(reg_tokens=2, class_token=False, global_pool="avg")}


@pytest.mark.parametrize("model_kwargs", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_forward_intermediates_equals_timm(model_kwargs, call):
    vit, model = pair(**model_kwargs)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_same(vit.forward_intermediates(images, **call), model.forward_intermediates(images, **call))
    assert_same(vit.forward_intermediates(images, **call), model.forward_intermediates(images, **call))


def test_forward_intermediates_passes_the_attention_mask_like_timm():
    vit, model = pair()
    images = torch.randn(2, 3, 16, 16)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask |= torch.eye(5, dtype=torch.bool)
    with torch.no_grad():
        assert_same(vit.forward_intermediates(images, attn_mask=mask), model.forward_intermediates(images, attn_mask=mask))


def test_get_intermediate_layers_equals_timm():
    vit, model = pair(reg_tokens=1)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for kwargs in ({}, dict(n=[0, 2], reshape=True, norm=True), dict(n=2, return_prefix_tokens=True)):
            assert_same(vit.get_intermediate_layers(images, **kwargs), model.get_intermediate_layers(images, **kwargs))


def test_output_fmt_is_checked():
    _, model = pair()
    with pytest.raises(ValueError, match="output_fmt 'NHWC'"):
        model.forward_intermediates(torch.randn(1, 3, 16, 16), output_fmt="NHWC")


@pytest.mark.parametrize("form", ["reversible", "sequential"])
def test_an_intermediate_is_what_a_model_of_the_first_blocks_returns(form):
    _, model = pair()
    model.form = form
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        taken = model.forward_intermediates(images, indices=[0, 1, 2], output_fmt="NLC", intermediates_only=True)
        for depth in (1, 2, 3):
            shorter = copy.deepcopy(model)
            shorter.prune_intermediate_layers([depth - 1], prune_head=False)
            torch.testing.assert_close(taken[depth - 1], shorter.blocks(shorter._embed(images))[:, 1:], atol=0, rtol=0)


def test_forward_intermediates_gradients_equal_in_both_executions():
    torch.manual_seed(0)
    vit = tiny_vit(drop_path_rate=0.2, proj_drop_rate=0.1).double().train()
    model = from_timm(vit, form="reversible")
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    tensors = [images, *model.parameters()]
    names = ["images", *(name for name, _ in model.named_parameters())]
    grads = {}
    for execution in ("invert", "autograd"):
        model.execution = execution

        def run():
            final, taken = model.forward_intermediates(images, indices=[0, 2], output_fmt="NLC")
            return torch.cat([model.forward_head(final).flatten(), taken[0].flatten(), taken[1].flatten()])

        grads[execution] = grads_of(run, tensors)
    assert_same_grads(grads["autograd"], grads["invert"], names)


def test_pruning_keeps_the_stacks_coupling():
    _, model = pair()
    model.blocks.set_coupling(revzoo.Coupling(scales=(0.5, 1.0)), exact=True)
    model.prune_intermediate_layers([0])
    assert (model.blocks.coupling, model.exact, len(model.blocks.blocks)) == (revzoo.Coupling(scales=(0.5, 1.0)), True, 1)


def test_prune_intermediate_layers_equals_timm():
    vit, model = pair()
    vit, model = copy.deepcopy(vit), from_timm(copy.deepcopy(vit), form="sequential").eval()
    images = torch.randn(2, 3, 16, 16)
    for target in (vit, model):
        assert target.prune_intermediate_layers([0, 1], prune_norm=True) == [0, 1]
    assert len(model.blocks.blocks) == len(vit.blocks) == 2
    assert model.num_classes == 0
    with torch.no_grad():
        assert_same(vit(images), model(images))
        assert_same(vit.forward_intermediates(images, [0, 1]), model.forward_intermediates(images, [0, 1]))
    assert len(model.synced_timm_model().blocks) == 2


@pytest.mark.parametrize("kwargs", [dict(prune_norm=True), dict(prune_head=False), {}], ids=["norm", "no-head", "head"])
@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_a_pruned_model_saves_and_loads_as_it_is(tmp_path, builtin_plugins, kwargs, global_pool):
    model = revzoo.create("vit-tiny-rev", img_size=32, depth=3, global_pool=global_pool).eval()
    model.prune_intermediate_layers([1], **kwargs)
    assert len(model.blocks.blocks) == 2
    loaded = revzoo.load(revzoo.save(model, tmp_path / "pruned.safetensors")).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), atol=0, rtol=0)


def test_feature_info_is_timms_naming_the_modules_that_see_the_block_outputs():
    vit, model = pair()
    assert [dict(info, module=info["module"].replace("block_outputs.", "blocks.")) for info in model.feature_info] == (
        vit.feature_info
    )
    assert all(isinstance(model.get_submodule(info["module"]), torch.nn.Identity) for info in model.feature_info)
    images = torch.randn(2, 3, 16, 16)
    expected = FeatureGetterNet(copy.deepcopy(vit), out_indices=(0, 2)).eval()
    actual = FeatureGetterNet(from_timm(copy.deepcopy(vit), form="sequential"), out_indices=(0, 2)).eval()
    assert actual.feature_info.channels() == expected.feature_info.channels()
    with torch.no_grad():
        assert_same(expected(images), actual(images))


def test_set_grad_checkpointing_switches_the_invert_execution():
    _, model = pair()
    model.form = "reversible"
    model.set_grad_checkpointing(False)
    assert (model.execution, model.grad_checkpointing) == ("autograd", False)
    model.set_grad_checkpointing()
    assert (model.execution, model.grad_checkpointing) == ("invert", True)
    model.grad_checkpointing = False
    assert model.execution == "autograd"
    model.form = "sequential"  # stores its activations whatever the execution
    model.set_grad_checkpointing(True)
    assert (model.execution, model.grad_checkpointing) == ("invert", False)


def test_set_input_size_equals_timm_and_survives_save_and_load(tmp_path, builtin_plugins):
    vit, model = pair()
    vit, model = copy.deepcopy(vit), from_timm(copy.deepcopy(vit), form="sequential").eval()
    for target in (vit, model):
        target.set_input_size(img_size=(24, 32))
    images = torch.randn(2, 3, 24, 32)
    with torch.no_grad():
        assert_same(vit(images), model(images))
        assert_same(vit.forward_intermediates(images), model.forward_intermediates(images))
        loaded = revzoo.load(revzoo.save(model, tmp_path / "resized.safetensors")).eval()
        assert_same(model(images), loaded(images))
    model.set_input_size(patch_size=4)
    vit.set_input_size(patch_size=4)
    with torch.no_grad():
        assert_same(vit(images), model(images))


@pytest.mark.parametrize("mode", ["", "jax", "moco"])
def test_init_weights_draws_what_timm_draws(mode):
    vit, model = pair(reg_tokens=1)
    vit, model = copy.deepcopy(vit), from_timm(copy.deepcopy(vit), form="reversible")
    torch.manual_seed(5)
    vit.init_weights(mode)
    torch.manual_seed(5)
    model.init_weights(mode)
    for (name, expected), actual in zip(vit.named_parameters(), model.parameters()):
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=name)
    with pytest.raises(ValueError, match="unknown init mode 'xavier'"):
        model.init_weights("xavier")


def test_pretrained_cfg_and_default_cfg_are_timms(builtin_plugins):
    vit, model = pair()
    assert model.pretrained_cfg == vit.pretrained_cfg and model.default_cfg == vit.default_cfg
    assert resolve_model_data_config(model) == resolve_model_data_config(vit)
    created = revzoo.create("vit-small-rev", img_size=64)
    assert created.pretrained_cfg["architecture"] == "vit_small_patch16_224"
    plain = timm.create_model("vit_small_patch16_224", img_size=64)
    assert created.pretrained_cfg == plain.pretrained_cfg
    assert resolve_model_data_config(created) == resolve_model_data_config(plain)
