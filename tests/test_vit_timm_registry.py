"""timm.create_model on revzoo's ViT names, once revzoo_vit.timm_models registered them in timm's registry."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet

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
