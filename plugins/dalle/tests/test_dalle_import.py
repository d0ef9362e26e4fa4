"""DALL-E plugin: DALLE-pytorch 1.6.6 checkpoints import with upstream's logits; export reads back the same.

The fixtures come from the real upstream package (tools/fixtures/make_dalle_fixtures.py); these
tests do not need it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import revzoo_dalle
import torch
from revzoo_dalle import build_dalle, read_dalle_pytorch, write_dalle_pytorch
from revzoo_dalle.attention import Attention
from revzoo_dalle.patterns import AttentionPattern

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "dalle"
CASES = ("seq_full_defaults", "rev_all_types", "rev_shared_stable", "seq_conv_shift")


def _load(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES / "reference.pt", map_location="cpu", weights_only=True)


def _imported_model(name: str) -> torch.nn.Module:
    imported = read_dalle_pytorch(_load(name))
    model = build_dalle(form=imported.form, **imported.config)
    model.load_state_dict(dict(imported.tensors), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", CASES)
def test_imported_logits_and_loss_match_upstream(name: str, reference: dict) -> None:
    expected = reference[name]
    model = _imported_model(name)
    assert revzoo.get_form(model) == ("reversible" if name.startswith("rev") else "sequential")
    with torch.no_grad():
        torch.testing.assert_close(model(expected["text"], expected["image"]), expected["logits"], rtol=0, atol=1e-5)
        torch.testing.assert_close(model(expected["text"], expected["image"][:, :5]), expected["partial_logits"],
                                   rtol=0, atol=1e-5)
        loss = model(expected["text"], expected["image"], return_loss=True)
    torch.testing.assert_close(loss, expected["loss"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("name", "use_cache"), [(name, index % 2 == 0) for index, name in enumerate(CASES)])
def test_generation_matches_upstream_for_the_same_seed(name: str, use_cache: bool, reference: dict) -> None:
    expected = reference[name]
    model = _imported_model(name)
    torch.manual_seed(100)
    images = model.generate_images(expected["text"], filter_thres=0.5, use_cache=use_cache)
    torch.testing.assert_close(images, expected["generated"], rtol=0, atol=1e-5)
    torch.manual_seed(101)
    primed = model.vae.decode(expected["image"])
    images = model.generate_images(expected["text"], img=primed, num_init_img_tokens=6, use_cache=use_cache)
    torch.testing.assert_close(images, expected["primed"], rtol=0, atol=1e-5)


def test_config_comes_from_hparams_then_upstream_class_defaults() -> None:
    config = read_dalle_pytorch(_load("seq_full_defaults")).config
    assert config["shift_tokens"] is True and config["rotary_emb"] is True  # absent: DALLE's defaults
    config = read_dalle_pytorch(_load("seq_conv_shift")).config
    assert config["rotary_emb"] is False and config["attn_types"] == ["conv_like", "axial_col"]
    assert (config["image_size"], config["vae_num_layers"], config["num_image_tokens"]) == (16, 2, 8)


def test_cli_path_import_then_load(register_plugin, tmp_path: Path, reference: dict) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    out = revzoo.import_checkpoint("dalle-pytorch", FIXTURES / "rev_shared_stable.pt", tmp_path / "m.safetensors")
    model = revzoo.load(out).eval()
    expected = reference["rev_shared_stable"]
    with torch.no_grad():
        torch.testing.assert_close(model(expected["text"], expected["image"]), expected["logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["rev_all_types", "rev_shared_stable", "seq_conv_shift"])
def test_export_writes_upstream_keys_back(register_plugin, name: str) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    original = _load(name)
    imported = read_dalle_pytorch(original)
    model = revzoo.create("dalle", form=imported.form, **imported.config)
    model.load_state_dict(dict(imported.tensors))
    exported = write_dalle_pytorch(model)
    assert set(exported["weights"]) == set(original["weights"])
    for key, tensor in original["weights"].items():
        torch.testing.assert_close(exported["weights"][key], tensor, rtol=0, atol=1e-6, msg=key)
    assert {k: exported["hparams"][k] for k in original["hparams"]} == original["hparams"]
    assert read_dalle_pytorch(exported).config == imported.config


def test_unmapped_and_missing_keys_are_listed() -> None:
    checkpoint = _load("seq_conv_shift")
    checkpoint["weights"]["transformer.extra.weight"] = torch.zeros(1)
    with pytest.raises(revzoo.CheckpointError, match=r"unexpected keys .*transformer\.extra\.weight \(1 in all\)"):
        read_dalle_pytorch(checkpoint)
    checkpoint = _load("seq_conv_shift")
    del checkpoint["weights"]["to_logits.1.bias"]
    with pytest.raises(revzoo.CheckpointError, match=r"missing .*to_logits\.bias"):
        read_dalle_pytorch(checkpoint)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("hparams"), "neither a DALL-E (hparams with dim and depth) nor a train_vae.py VAE"),
        (lambda c: c["hparams"].update(sparse_attn=True), "sparse_attn=True"),
        (lambda c: c["hparams"].update(attn_types=("sparse",)), "DeepSpeed"),
        (lambda c: c["hparams"].update(dim=32), "shape mismatch"),
        (lambda c: c["hparams"].update(unknown_thing=1), "['unknown_thing'] are not supported"),
        (lambda c: c.update(vae_class_name="MyVAE"), "unknown vae_class_name 'MyVAE'"),
    ],
)
def test_bad_checkpoints_are_checkpoint_errors(change, message: str) -> None:
    checkpoint = _load("seq_conv_shift")
    change(checkpoint)
    with pytest.raises(revzoo.CheckpointError) as info:
        read_dalle_pytorch(checkpoint)
    assert message in str(info.value)


def test_pretrained_vae_checkpoints_import_the_transformer_only() -> None:
    checkpoint = _load("rev_all_types")
    checkpoint["vae_class_name"] = "OpenAIDiscreteVAE"
    checkpoint["vae_params"] = None
    checkpoint["weights"] = {k: v for k, v in checkpoint["weights"].items() if not k.startswith("vae.")}
    del checkpoint["opt_state"]  # the fixture's optimizer held the VAE parameters removed here
    imported = read_dalle_pytorch(checkpoint)
    assert imported.config["vae"] == "none" and imported.config["num_image_tokens"] == 8
    assert not any(key.startswith("vae.") for key in imported.tensors)


def test_a_rotary_table_revzoo_would_not_reproduce_is_refused() -> None:
    checkpoint = _load("rev_all_types")
    checkpoint["weights"]["transformer.pos_emb"] = checkpoint["weights"]["transformer.pos_emb"] * 2
    with pytest.raises(revzoo.CheckpointError, match="transformer.pos_emb .* differs from the rotary table"):
        read_dalle_pytorch(checkpoint)


def test_conv_like_attention_with_other_kernel_and_dilation_matches_upstream(reference: dict) -> None:
    expected = reference["conv_attention"]
    pattern = AttentionPattern("conv_like", expected["text_len"], expected["image_size"],
                               expected["kernel_size"], expected["dilation"])
    attention = Attention(16, pattern=pattern, heads=2, dim_head=8)
    weights = expected["weights"]
    attention.load_state_dict({"to_qkv.weight": weights["to_qkv.weight"], "to_out.weight": weights["to_out.0.weight"],
                               "to_out.bias": weights["to_out.0.bias"]})
    with torch.no_grad():
        torch.testing.assert_close(attention(expected["x"])[0], expected["out"], rtol=0, atol=1e-5)
        torch.testing.assert_close(attention(expected["x"][:, :20])[0], expected["partial_out"], rtol=0, atol=1e-5)


def test_export_checkpoint_file_reimports_to_the_same_logits(register_plugin, tmp_path: Path, reference: dict) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    revzoo_file = revzoo.import_checkpoint("dalle-pytorch", FIXTURES / "rev_all_types.pt", tmp_path / "m.safetensors")
    exported = revzoo.export_checkpoint("dalle-pytorch", revzoo_file, tmp_path / "back.pt")
    again = revzoo.import_checkpoint("dalle-pytorch", exported, tmp_path / "again.safetensors")
    expected = reference["rev_all_types"]
    with torch.no_grad():
        logits = revzoo.load(again).eval()(expected["text"], expected["image"])
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-5)
