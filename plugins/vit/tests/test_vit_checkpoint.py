"""Moving weights between timm and revzoo: from_timm/to_timm, the "timm" format, save/load."""

from __future__ import annotations

import pytest
import revzoo_vit
import timm
import torch
from revzoo_vit import from_timm, read_timm, to_timm, write_timm
from safetensors.torch import save_file

import revzoo

TINY = dict(img_size=16, patch_size=8, embed_dim=32, num_heads=2)  # what a state dict cannot tell


def tiny_vit(**overrides) -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, "depth": 2, "num_classes": 5, **overrides})


@pytest.fixture
def vit_plugin(register_plugin):
    register_plugin(revzoo_vit, name="vit")


@pytest.fixture
def images():
    return torch.randn(2, 3, 16, 16)


def test_from_timm_shares_weights_and_to_timm_gives_it_back(images):
    vit = tiny_vit().eval()
    model = from_timm(vit, form="sequential")
    assert model.revzoo_architecture == "timm"
    assert model.revzoo_config == {"model_name": "vit_tiny_patch16_224", **TINY, "depth": 2, "num_classes": 5}
    assert model.head.weight is vit.head.weight
    assert model.blocks.blocks[1].f.attn is vit.blocks[1].attn and model.blocks.blocks[1].g.mlp is vit.blocks[1].mlp
    model.reset_classifier(3)
    back = to_timm(model)
    assert back is vit and back.head is model.head
    assert back.revzoo_config["num_classes"] == 3
    torch.testing.assert_close(back(images), model(images), atol=1e-6, rtol=0)


def test_revzoo_from_timm_goes_through_the_plugins_adapter(vit_plugin, images):
    vit = tiny_vit().eval()
    model = revzoo.from_timm(vit, form="reversible")
    assert revzoo.get_form(model) == "reversible" and model.head.weight is vit.head.weight
    assert revzoo.to_timm(revzoo.set_form(model, "sequential")) is vit
    assert revzoo.plugins_info()[0]["adapters"] == ["timm"]


def test_revzoo_from_timm_without_the_plugin_is_a_clear_error():
    with pytest.raises(revzoo.UnknownAdapterError, match="unknown adapter 'timm'"):
        revzoo.from_timm(tiny_vit())


def test_to_timm_warns_that_timm_computes_the_sequential_form():
    with pytest.warns(UserWarning, match="sequential"):
        to_timm(from_timm(tiny_vit(), form="reversible"))


def test_write_timm_gives_timm_state_dict(images):
    vit = tiny_vit().eval()
    state = write_timm(from_timm(vit, form="sequential"))
    assert list(state) == list(vit.state_dict())  # same keys, in timm's order
    fresh = tiny_vit().eval()
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh(images), vit(images), atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_import_then_export_round_trip(vit_plugin, tmp_path, images, suffix):
    vit = tiny_vit(depth=3, num_classes=7).eval()
    src = tmp_path / f"timm{suffix}"
    if suffix == ".safetensors":
        save_file(vit.state_dict(), src)
    else:
        torch.save({"state_dict": vit.state_dict(), "epoch": 4}, src)  # a training checkpoint

    dst = revzoo.import_checkpoint("timm", src, tmp_path / "rev.safetensors", model="vit_tiny_patch16_224", **TINY)
    model = revzoo.load(dst).eval()
    assert revzoo.get_form(model) == "sequential"
    assert model.revzoo_config["depth"] == 3 and model.num_classes == 7  # read from the tensors
    torch.testing.assert_close(model(images), vit(images), atol=1e-6, rtol=0)

    out = revzoo.export_checkpoint("timm", dst, tmp_path / f"back{suffix}")
    exported = revzoo.read_foreign(out)
    assert exported.keys() == vit.state_dict().keys()
    for key, tensor in vit.state_dict().items():
        torch.testing.assert_close(exported[key], tensor, atol=0, rtol=0)


def test_save_load_round_trip_of_a_wrapped_model(vit_plugin, tmp_path, images):
    model = from_timm(tiny_vit(global_pool="avg", reg_tokens=1), form="reversible").eval()
    loaded = revzoo.load(revzoo.save(model, tmp_path / "m.safetensors")).eval()
    assert revzoo.get_form(loaded) == "reversible"
    torch.testing.assert_close(loaded(images), model(images), atol=1e-6, rtol=0)


def test_read_timm_errors_name_the_problem():
    state = tiny_vit().state_dict()
    with pytest.raises(revzoo.CheckpointError, match="--model"):
        read_timm(state)
    with pytest.raises(revzoo.CheckpointError, match="shapes do not fit"):
        read_timm(state, model="vit_small_patch16_224", img_size=16, patch_size=8)
    with pytest.raises(revzoo.CheckpointError, match=r"unmapped keys 1 \(blocks.0.extra.weight\)"):
        read_timm({**state, "blocks.0.extra.weight": torch.zeros(1)}, model="vit_tiny_patch16_224", **TINY)
    with pytest.raises(revzoo.CheckpointError, match="resnet18"):
        read_timm(state, model="resnet18")
    with pytest.raises(revzoo.CheckpointError, match="RevViT"):
        write_timm(torch.nn.Linear(2, 2))


def test_save_load_keeps_the_pretrained_tag_defaults(vit_plugin, tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224.augreg_in21k", pretrained=False, **TINY, depth=1)
    assert vit.num_classes == 21843  # set by the tag's pretrained config, not by a kwarg
    model = from_timm(vit)
    assert model.revzoo_config["model_name"] == "vit_tiny_patch16_224.augreg_in21k"
    assert revzoo.load(revzoo.save(model, tmp_path / "m.safetensors")).num_classes == 21843
