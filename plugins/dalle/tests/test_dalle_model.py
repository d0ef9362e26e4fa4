"""DALL-E plugin: registration, shapes, losses in both forms, generation with and without the cache, bad configs."""

from __future__ import annotations

import pytest
import revzoo_dalle
import torch
from revzoo_dalle import build_dalle

import revzoo

TINY = {
    "dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "num_text_tokens": 12, "text_seq_len": 4,
    "image_size": 16, "vae_num_layers": 2, "num_image_tokens": 8, "vae_codebook_dim": 8, "vae_hidden_dim": 4,
}
FORMS = ("sequential", "reversible")


def _inputs(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(1, TINY["num_text_tokens"], (batch, TINY["text_seq_len"]), generator=generator)
    text[0, -1] = 0
    image = torch.randint(0, TINY["num_image_tokens"], (batch, 16), generator=generator)
    return text, image


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Moves every weight off its initial value, so that sampling and gradients depend on all of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)
    return model


def test_registered_names_build_both_forms(register_plugin) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    assert revzoo.list_models("dalle*") == ["dalle", "dalle-rev"]
    assert revzoo.get_form(revzoo.create("dalle-rev", **TINY)) == "reversible"
    model = revzoo.create("dalle", **TINY)
    assert revzoo.get_form(model) == "sequential"
    assert model.revzoo_architecture == "dalle"


def test_save_load_round_trip_keeps_logits(register_plugin, tmp_path) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    model = _perturbed(revzoo.create("dalle-rev", **TINY, share_input_output_emb=True, shared_attn_ids=[0, 0])).eval()
    revzoo.save(model, tmp_path / "m.safetensors")
    loaded = revzoo.load(tmp_path / "m.safetensors").eval()
    text, image = _inputs()
    torch.testing.assert_close(loaded(text, image), model(text, image), rtol=0, atol=0)


@pytest.mark.parametrize("form", FORMS)
def test_logits_shape_mask_and_loss_backward(form: str) -> None:
    model = build_dalle(form=form, **TINY, attn_types=["full", "conv_like"], attn_dropout=0.1, ff_dropout=0.1)
    text, image = _inputs()
    logits = model(text, image)
    text_ids = TINY["num_text_tokens"] + TINY["text_seq_len"]
    assert logits.shape == (2, 4 + 16, text_ids + 8)
    assert (logits[:, :4, text_ids:] < -1e30).all() and (logits[:, 4:, :text_ids] < -1e30).all()
    assert model(text, image[:, :5]).shape == (2, 1 + 4 + 5, text_ids + 8)
    with pytest.raises(ValueError, match="at most 16 image tokens fit, got 17"):
        model(text, torch.zeros(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"text must have shape \(batch, 4\)"):
        model(text[:, :3], image)
    loss = model(text, image, return_loss=True)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert loss.ndim == 0 and all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in model.vae.parameters())  # the VAE is frozen


def test_forms_share_parameters_but_differ() -> None:
    torch.manual_seed(0)
    model = _perturbed(build_dalle(form="reversible", **TINY)).eval()
    text, image = _inputs()
    reversible = model(text, image)
    revzoo.set_form(model, "sequential")
    assert not torch.allclose(model(text, image), reversible)


def test_raw_images_go_through_the_vae() -> None:
    model = build_dalle(form="reversible", **TINY)
    text, _ = _inputs()
    images = torch.rand(2, 3, 16, 16)
    ids = model.vae.get_codebook_indices(images)
    assert ids.shape == (2, 16)
    torch.testing.assert_close(model(text, images), model(text, ids))
    assert model.vae.decode(ids).shape == (2, 3, 16, 16)
    model.vae.requires_grad_(True)
    model.vae(images, return_loss=True).backward()


@pytest.mark.parametrize(("form", "cond_scale"), [("sequential", 1.0), ("reversible", 3.0)])
def test_cached_generation_equals_uncached(form: str, cond_scale: float) -> None:
    model = build_dalle(form=form, **{**TINY, "depth": 4}, attn_types=["full", "axial_row", "axial_col", "conv_like"])
    model = _perturbed(model.double())
    text, image = _inputs()
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        outputs.append(model.generate_images(text, cond_scale=cond_scale, use_cache=use_cache, return_tokens=True))
    assert outputs[0].shape == (2, 16)
    assert len(set(outputs[0].flatten().tolist())) > 2  # really sampled
    assert torch.equal(outputs[0], outputs[1])


def test_primed_generation_keeps_the_prime_and_decodes() -> None:
    model = _perturbed(build_dalle(form="reversible", **TINY, shift_tokens=False, rotary_emb=False).double())
    text, image = _inputs()
    torch.manual_seed(3)
    tokens = model.generate_images(text, img=image, num_init_img_tokens=5, return_tokens=True)
    assert torch.equal(tokens[:, :5], image[:, :5])
    torch.manual_seed(3)
    uncached = model.generate_images(text, img=image, num_init_img_tokens=5, use_cache=False, return_tokens=True)
    assert torch.equal(tokens, uncached)
    assert model.generate_images(text).shape == (2, 3, 16, 16)
    assert model.training  # restored


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dim_head": 4}, "dim_head 4 is too small for rotary"),
        ({"attn_types": ["sparse"]}, "DeepSpeed"),
        ({"attn_types": ["full", "axial"]}, "unknown attention type 'axial'"),
        ({"attn_types": "full,axial_row", "shared_attn_ids": [0, 0]}, "shared layers need equal attn_types"),
        ({"conv_kernel_size": 4}, "conv_kernel_size must be odd"),
        ({"image_size": 24}, "image_size must be a power of 2"),
        ({"heads": 0}, "heads must be an integer >= 1"),
        ({"attn_dropout": 1.5}, "attn_dropout must be a number in [0, 1)"),
        ({"vae": "openai"}, "vae must be one of"),
        ({"shared_ff_ids": 3}, "shared_ff_ids must be None or a non-empty list"),
        ({"vae_num_layers": 5}, ">= 2**vae_num_layers (2**5)"),
        ({"depth": 2.5}, "depth must be an integer"),
        ({"stable": "no"}, "stable must be true or false, got 'no'"),
        ({"no_such_option": 1}, "unknown dalle option(s) ['no_such_option']"),
    ],
)
def test_bad_hyperparameters_are_config_errors(override: dict, message: str) -> None:
    with pytest.raises(revzoo.ConfigError) as info:
        build_dalle(form="reversible", **{**TINY, **override})
    assert message in str(info.value)


def test_token_ids_only_model_without_vae() -> None:
    model = build_dalle(form="sequential", **TINY, vae="none")
    text, image = _inputs()
    assert model.vae is None
    assert model(text, image).shape[1] == 20
    with pytest.raises(ValueError, match="no VAE"):
        model(text, torch.rand(2, 3, 16, 16))
    assert model.generate_images(text).shape == (2, 16)


@pytest.mark.parametrize("form", FORMS)
def test_a_few_training_steps_lower_the_loss(form: str) -> None:
    torch.manual_seed(0)
    model = build_dalle(form=form, **TINY, attn_types=["full", "axial_row"], ff_dropout=0.1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    text, image = _inputs()
    losses = []
    for _ in range(15):
        loss = model(text, image, return_loss=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_example_inputs_make_a_valid_call(register_plugin) -> None:
    register_plugin(revzoo_dalle, name="dalle")
    model = _perturbed(revzoo.create("dalle-rev", **TINY)).eval()
    args, kwargs = revzoo.get_architecture("dalle").example_inputs(model, torch.Generator().manual_seed(0))
    assert args[0].shape == (2, 4) and args[1].shape == (2, 16)
    reversible = model(*args, **kwargs)
    revzoo.set_form(model, "sequential")
    assert (model(*args, **kwargs) - reversible).abs().max() > 1e-3  # the forms are different functions
