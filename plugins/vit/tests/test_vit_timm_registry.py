"""timm.create_model on revzoo's ViT names, once revzoo_vit.timm_models registered them in timm's registry."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet, FeatureHookNet
from timm.models._features_fx import FeatureGraphNet

import revzoo

timm_models = pytest.importorskip("revzoo_vit.timm_models")


def test_every_vit_variant_is_a_timm_name(builtin_plugins):
    assert set(timm_models.TIMM_NAMES) == {name for name in builtin_plugins if name.startswith("vit-")}
    assert set(timm_models.TIMM_NAMES) <= set(timm.list_models("vit-*"))
    assert all(timm.is_model(name) for name in timm_models.TIMM_NAMES)
    assert timm_models.__all__ == ["TIMM_NAMES"]


@pytest.mark.parametrize("name, form", [("vit-tiny-rev", "reversible"), ("vit-tiny", "sequential")])
def test_timm_create_model_is_revzoo_create(builtin_plugins, name, form):
    torch.manual_seed(0)
    through_timm = timm.create_model(name, img_size=32, depth=2, num_classes=7).eval()
    torch.manual_seed(0)
    direct = revzoo.create(name, img_size=32, depth=2, num_classes=7).eval()
    assert revzoo.get_form(through_timm) == form and through_timm.revzoo_architecture == "vit-tiny"
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(through_timm(images), direct(images), atol=0, rtol=0)


def test_features_only_gives_timms_feature_wrapper(builtin_plugins):
    model = timm.create_model("vit-tiny-rev", img_size=32, depth=3, features_only=True, out_indices=(0, 2)).eval()
    assert isinstance(model, FeatureGetterNet)
    assert model.feature_info.channels() == [192, 192]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 192, 2, 2)] * 2


def test_pretrained_is_refused_with_the_ways_to_load_weights(builtin_plugins):
    with pytest.raises(revzoo.ConfigError, match="no pretrained weights to download.*hf-hub:ORG/NAME"):
        timm.create_model("vit-small-rev", pretrained=True)


# A small vit-tiny: 2x2 patches of 16 pixels, 32 channels, 3 blocks.
SMALL = dict(img_size=32, depth=3, embed_dim=32, num_heads=2)


def seeded(create, *args, **kwargs):
    torch.manual_seed(0)
    return create(*args, **kwargs)


@pytest.mark.parametrize(
    "feature_cls, wrapper", [("getter", FeatureGetterNet), ("hook", FeatureHookNet), ("fx", FeatureGraphNet)]
)
def test_each_feature_cls_gives_what_timms_vit_gives_in_the_sequential_form(builtin_plugins, feature_cls, wrapper):
    options = dict(features_only=True, feature_cls=feature_cls, out_indices=(0, 2), **SMALL)
    ours = seeded(timm.create_model, "vit-tiny", **options).eval()
    theirs = seeded(timm.create_model, "vit_tiny_patch16_224", **options).eval()
    assert type(ours) is type(theirs) is wrapper
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [32, 32]
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [16, 16]
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, actual = theirs(images), ours(images)
    assert len(actual) == len(expected) == 2
    for feature, reference in zip(actual, expected):
        torch.testing.assert_close(feature, reference, atol=0, rtol=0)


@pytest.mark.parametrize("feature_cls", ["getter", "hook", "fx"])
def test_each_feature_cls_gives_the_outputs_after_the_blocks_in_the_reversible_form(builtin_plugins, feature_cls):
    features = seeded(timm.create_model, "vit-tiny-rev", features_only=True, feature_cls=feature_cls,
                      out_indices=(0, 2), **SMALL).eval()
    model = seeded(revzoo.create, "vit-tiny-rev", **SMALL).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = feature_cls != "getter"  # hook and fx see the blocks' token outputs, prefix tokens included (NLC)
    assert features.output_fmt == ("NLC" if tokens else "NCHW")
    with torch.no_grad():
        actual = features(images)
        expected = model.forward_intermediates(images, [0, 2], output_fmt="NLC" if tokens else "NCHW",
                                               return_prefix_tokens=tokens, intermediates_only=True)
    if tokens:
        expected = [torch.cat([prefix, patches], dim=1) for patches, prefix in expected]
    assert [tuple(f.shape) for f in actual] == ([(2, 5, 32)] * 2 if tokens else [(2, 32, 2, 2)] * 2)
    for feature, reference in zip(actual, expected, strict=True):
        torch.testing.assert_close(feature, reference, atol=0, rtol=0)


def test_feature_options_are_timms(builtin_plugins):
    nlc = timm.create_model("vit-tiny-rev", features_only=True, output_fmt="NLC", out_indices=(1,), **SMALL).eval()
    assert isinstance(nlc, FeatureGetterNet) and nlc.output_fmt == "NLC"
    with torch.no_grad():
        assert [tuple(f.shape) for f in nlc(torch.randn(1, 3, 32, 32))] == [(1, 4, 32)]
    # feature_cfg, as timm's build_model_with_cfg takes it (timm's own ViT entry points refuse one)
    graph = timm.create_model("vit-tiny-rev", features_only=True, feature_cfg={"feature_cls": "fx"}, **SMALL)
    assert isinstance(graph, FeatureGraphNet)
    assert graph.feature_info.module_name() == [f"block_outputs.{i}" for i in range(3)]
    assert isinstance(timm.create_model("vit-tiny", features_only=True, feature_cls=FeatureHookNet, **SMALL), FeatureHookNet)
    assert timm.create_model("vit-tiny", features_only=True, **SMALL).feature_info.module_name() == [
        "block_outputs.0", "block_outputs.1", "block_outputs.2"]  # timm's ViT default: the last 3 blocks


@pytest.mark.parametrize("options, error, match", [
    (dict(features_only=True, feature_cls="list"), revzoo.ConfigError, "'getter'.*'hook'.*'fx'"),
    (dict(features_only=True, feature_cls="hook", output_fmt="NCHW"), revzoo.ConfigError, "token outputs"),
    (dict(features_only=True, output_fmt="NHWC"), revzoo.ConfigError, "'NCHW' or 'NLC'"),
    (dict(features_only=True, feature_cls="hook", feature_cfg={"flatten_sequential": True}), revzoo.ConfigError,
     "chain of its child modules"),
    (dict(feature_cls="getter"), TypeError, "features_only=True"),
    (dict(not_a_model_arg=1), TypeError, "not_a_model_arg"),  # timm's API contract: unknown arguments are TypeErrors
], ids=["list", "hook-nchw", "nhwc", "flatten", "no-features", "unknown"])
def test_feature_options_a_revvit_cannot_take_are_refused(builtin_plugins, options, error, match):
    with pytest.raises(error, match=match):
        timm.create_model("vit-tiny-rev", **SMALL, **options)


def test_pretrained_cfg_and_default_cfg_are_set_as_timm_sets_them(builtin_plugins):
    for name in timm_models.TIMM_NAMES:
        assert timm.models.get_pretrained_cfg_value(name, "input_size") == (3, 224, 224)
    assert set(timm_models.TIMM_NAMES) <= set(timm.list_models("vit-*", name_matches_cfg=True))
    assert not timm.list_models("vit-*", pretrained=True)  # nothing to download
    model = timm.create_model("vit-small-rev", **SMALL)
    assert model.default_cfg is model.pretrained_cfg and model.pretrained_cfg["architecture"] == "vit-small-rev"
    assert not {"url", "hf_hub_id", "file"} & set(model.pretrained_cfg)
    timm_cfg = timm.models.get_pretrained_cfg("vit_small_patch16_224").to_dict()
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "first_conv", "classifier"):
        assert model.pretrained_cfg[key] == timm_cfg[key]
    assert timm.data.resolve_model_data_config(model)["mean"] == timm_cfg["mean"]
    features = timm.create_model("vit-small-rev", features_only=True, **SMALL)
    assert features.default_cfg is features.pretrained_cfg
    assert features.pretrained_cfg["architecture"] == "vit-small-rev" and "classifier" not in features.pretrained_cfg
    overlaid = timm.create_model("vit-small-rev", pretrained_cfg_overlay={"crop_pct": 1.0}, **SMALL)
    assert overlaid.pretrained_cfg["crop_pct"] == 1.0
