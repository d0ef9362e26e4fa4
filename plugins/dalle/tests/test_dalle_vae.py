"""discrete-vae: DALLE-pytorch 1.6.6's DiscreteVAE calls and numbers (fixtures from
tools/fixtures/make_dalle_vae_fixtures.py),

train_vae.py files imported and exported, and the VAE as a registered model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from revzoo_dalle import read_dalle_pytorch, write_dalle_pytorch

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "dalle"
CASES = ("vae_plain", "vae_resnet_kl", "vae_straight_through")


pytestmark = pytest.mark.usefixtures("dalle_plugin")


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES / "vae_reference.pt", map_location="cpu", weights_only=True)


def _train_vae_file(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def _imported(name: str, reference: dict) -> torch.nn.Module:
    imported = read_dalle_pytorch(_train_vae_file(name))
    assert imported.architecture == "discrete-vae"
    options = reference[name]["options"]  # train_vae.py passes these beside hparams; they are not in its file
    model = revzoo.create("discrete-vae", **{**imported.config, **options})
    model.load_state_dict(dict(imported.tensors), strict=True)
    return model


@pytest.mark.parametrize("name", CASES)
def test_same_codes_decodings_and_losses_as_dalle_pytorch(name: str, reference: dict) -> None:
    expected, model = reference[name], _imported(name, reference)
    images = expected["images"]
    with torch.no_grad():
        torch.testing.assert_close(model(images, return_logits=True), expected["logits"], rtol=0, atol=1e-5)
        assert torch.equal(model.get_codebook_indices(images), expected["indices"])
        torch.testing.assert_close(model.decode(expected["indices"]), expected["decoded"], rtol=0, atol=1e-5)
        torch.manual_seed(50)
        torch.testing.assert_close(model(images), expected["out"], rtol=0, atol=1e-5)
        torch.manual_seed(51)
        loss, recons = model(images, return_loss=True, return_recons=True, temp=0.8)
    torch.testing.assert_close(loss, expected["loss"], rtol=0, atol=1e-5)
    torch.testing.assert_close(recons, expected["recons"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_same_gradients_as_dalle_pytorch(name: str, reference: dict) -> None:
    expected, model = reference[name], _imported(name, reference)
    torch.manual_seed(52)
    model(expected["images"], return_loss=True).backward()
    for key, grad in expected["grads"].items():
        torch.testing.assert_close(model.vae.get_parameter(key).grad, grad, rtol=1e-4, atol=1e-6, msg=key)


def test_train_vae_files_import_and_export_through_the_cli_api(tmp_path: Path, reference: dict) -> None:
    source = FIXTURES / "vae_resnet_kl.pt"
    path = revzoo.import_checkpoint("dalle-pytorch", source, tmp_path / "vae.safetensors")
    meta = revzoo.read_metadata(path)
    assert meta["architecture"] == "discrete-vae" and meta["config"]["num_resnet_blocks"] == 2
    model = revzoo.load(path)
    images = reference["vae_resnet_kl"]["images"]
    assert torch.equal(model.get_codebook_indices(images), reference["vae_resnet_kl"]["indices"])
    exported = revzoo.export_checkpoint("dalle-pytorch", path, tmp_path / "vae.pt")
    again, original = torch.load(exported, weights_only=True), _train_vae_file("vae_resnet_kl")
    assert again["hparams"] == original["hparams"]
    assert again["weights"].keys() == original["weights"].keys()
    assert all(torch.equal(again["weights"][k], v) for k, v in original["weights"].items())


def test_exported_options_that_train_vae_does_not_record_go_in_hparams() -> None:
    model = revzoo.create("discrete-vae", image_size=16, num_layers=2, kl_div_loss_weight=0.5, channels=1,
                          normalization=[[0.5], [0.25]])
    hparams = write_dalle_pytorch(model)["hparams"]
    assert hparams["kl_div_loss_weight"] == 0.5 and hparams["channels"] == 1 and hparams["normalization"] == [[0.5], [0.25]]
    assert "smooth_l1_loss" not in hparams
    again = revzoo.create("discrete-vae", **read_dalle_pytorch(write_dalle_pytorch(model)).config)
    assert again.vae.normalization == ((0.5,), (0.25,)) and again.vae.kl_div_loss_weight == 0.5


def test_bad_vae_options_are_config_errors() -> None:
    with pytest.raises(revzoo.ConfigError, match="image_size must be a power of 2"):
        revzoo.create("discrete-vae", image_size=24)
    with pytest.raises(revzoo.ConfigError, match="normalization must be None or"):
        revzoo.create("discrete-vae", normalization=[[0.5]])
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 3, 16, 16\)"):
        revzoo.create("discrete-vae", image_size=16, num_layers=2)(torch.zeros(1, 3, 8, 8))


DALLE = dict(dim=16, depth=1, heads=2, dim_head=8, num_text_tokens=20, text_seq_len=3)


def test_dalle_takes_a_vae_model_or_its_file(tmp_path: Path, reference: dict) -> None:
    vae = revzoo.create("discrete-vae", image_size=16, num_layers=2, num_tokens=8, codebook_dim=8, hidden_dim=4,
                        num_resnet_blocks=1)
    model = revzoo.create("dalle-rev", vae=vae, **DALLE)
    assert model.vae is vae.vae and model.image_seq_len == 16 and model.num_image_tokens == 8
    saved = revzoo.load(revzoo.save(model, tmp_path / "dalle.safetensors"))
    assert saved.revzoo_config["vae"] == "discrete" and saved.revzoo_config["vae_num_resnet_blocks"] == 1
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(saved.image_tokens(images), vae.get_codebook_indices(images))

    vae_file = revzoo.save(vae, tmp_path / "vae.safetensors")
    from_file = revzoo.create("dalle-rev", vae=str(vae_file), **DALLE)
    assert torch.equal(from_file.image_tokens(images), vae.get_codebook_indices(images))
    from_train_vae = revzoo.create("dalle-rev", vae=FIXTURES / "vae_plain.pt", **DALLE)
    assert torch.equal(from_train_vae.image_tokens(reference["vae_plain"]["images"]), reference["vae_plain"]["indices"])


class StandInDecoder(torch.nn.Module):
    """A user's VAE (as OpenAI's or VQGAN's would be wrapped): the decoder protocol and nothing else."""

    num_tokens, image_size, num_layers = 8, 32, 3

    def __init__(self) -> None:
        super().__init__()
        self.colours = torch.nn.Embedding(8, 3)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        side = self.image_size // 2**self.num_layers
        cells = self.colours(tokens).unflatten(1, (side, side)).permute(0, 3, 1, 2)
        return cells.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)


def test_a_decoder_following_the_protocol_is_attached_not_saved(tmp_path: Path) -> None:
    decoder = StandInDecoder()
    model = revzoo.create("dalle-rev", vae=decoder, **DALLE)
    assert model.vae is decoder and model.image_seq_len == 16
    torch.manual_seed(0)
    images = model.generate_images(torch.tensor([[1, 2, 0]]))
    torch.manual_seed(0)
    tokens = model.generate_images(torch.tensor([[1, 2, 0]]), return_tokens=True)
    assert torch.equal(images, decoder.decode(tokens)) and images.shape == (1, 3, 32, 32)
    path = revzoo.save(model, tmp_path / "dalle.safetensors")
    assert revzoo.read_metadata(path)["config"]["vae"] == "none"
    loaded = revzoo.load(path)
    assert loaded.vae is None
    loaded.attach_decoder(decoder)
    torch.manual_seed(0)
    assert torch.equal(loaded.generate_images(torch.tensor([[1, 2, 0]])), images)
    with pytest.raises(ValueError, match="no VAE encoder: pass image token ids"):
        loaded(torch.tensor([[1, 2, 0]]), torch.zeros(1, 3, 32, 32))


def test_bad_vae_values_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(revzoo.ConfigError, match="a Linear lacks decode, num_tokens, image_size, num_layers$"):
        revzoo.create("dalle-rev", vae=torch.nn.Linear(2, 2), **DALLE)
    with pytest.raises(revzoo.ConfigError, match="'missing.pt' is none of these"):
        revzoo.create("dalle-rev", vae="missing.pt", **DALLE)
    with pytest.raises(revzoo.ConfigError, match=r"is not a VAE \(train_vae.py\) checkpoint"):
        revzoo.create("dalle-rev", vae=FIXTURES / "seq_full_defaults.pt", **DALLE)
    model = revzoo.create("dalle-rev", vae="none", image_size=32, vae_num_layers=2, num_image_tokens=8, **DALLE)
    with pytest.raises(revzoo.ConfigError, match="8 codes on a 4x4 grid; this model needs 8 codes on a 8x8 grid"):
        model.attach_decoder(StandInDecoder())
