"""The "dalle" config: defaults, validation with clear errors, and the builder revzoo.create calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import revzoo

from .model import Dalle
from .patterns import ATTENTION_TYPES
from .rotary import rotary_width
from .tokenizer import TOKENIZER_KINDS
from .transformer import DalleTransformer
from .vae import DiscreteVAE
from .vae_source import VAE_KINDS, resolve_vae

__all__ = ["DEFAULTS", "VAE_KINDS", "build_dalle", "normalize_attn_types"]

DEFAULTS: dict[str, Any] = {
    "dim": 256,
    "depth": 4,
    "heads": 8,
    "dim_head": 64,
    "num_text_tokens": 49408,  # the default tokenizer's (CLIP's) vocabulary, so any caption can be prompted
    "text_seq_len": 64,
    "attn_types": ["full"],
    "conv_kernel_size": 5,
    "conv_dilation": 1,
    "ff_mult": 4,
    "attn_dropout": 0.0,
    "ff_dropout": 0.0,
    "loss_img_weight": 7.0,
    "stable": False,
    "sandwich_norm": False,
    "shift_tokens": True,
    "rotary_emb": True,
    "shared_attn_ids": None,
    "shared_ff_ids": None,
    "share_input_output_emb": False,
    "vae": "discrete",
    "image_size": 128,
    "num_image_tokens": 512,
    "vae_num_layers": 3,
    "vae_codebook_dim": 256,
    "vae_hidden_dim": 64,
    "vae_num_resnet_blocks": 0,
    "vae_channels": 3,
    "tokenizer": "clip",
    "tokenizer_sha256": None,
}


def _fail(message: str) -> None:
    raise revzoo.ConfigError(message)


def _positive_int(config: dict[str, Any], name: str, minimum: int = 1) -> int:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _probability(config: dict[str, Any], name: str) -> float:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        _fail(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def normalize_attn_types(value: Any) -> tuple[str, ...]:
    """Accepts a name, a comma-separated string (as upstream's training script) or a sequence of names."""
    names = tuple(value.split(",")) if isinstance(value, str) else tuple(value) if isinstance(value, Sequence) else None
    if not names:
        _fail(f"attn_types must be a non-empty list of {', '.join(map(repr, ATTENTION_TYPES))}, got {value!r}")
    for name in names:
        if name == "sparse":
            _fail("attn_types 'sparse' needs DeepSpeed's CUDA kernels upstream and is not supported; "
                  f"use one of {', '.join(map(repr, ATTENTION_TYPES))}")
        if name not in ATTENTION_TYPES:
            _fail(f"unknown attention type {name!r} in attn_types; expected {', '.join(map(repr, ATTENTION_TYPES))}")
    return names


def _shared_ids(config: dict[str, Any], name: str) -> tuple[Any, ...] | None:
    value = config[name]
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        _fail(f"{name} must be None or a non-empty list of layer ids (cycled over depth), got {value!r}")
    return tuple(value)


def build_dalle(*, form: str = "reversible", **config: Any) -> Dalle:
    """Builds a `Dalle` from a full "dalle" config; raises revzoo.ConfigError for bad hyperparameters.

    `vae` is "discrete" (built from the vae_* options), "none", a discrete-vae model or file
    (its sizes replace the vae_* options), or a decoder (see vae_source.py for the protocol).
    """
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        _fail(f"unknown dalle option(s) {unknown}; valid options: {', '.join(sorted(DEFAULTS))}")
    config = {**DEFAULTS, **config}
    given_vae, vae_record = resolve_vae(config["vae"])
    config.update(vae_record)
    for name in ("dim", "depth", "heads", "dim_head", "num_text_tokens", "text_seq_len", "ff_mult",
                 "num_image_tokens", "vae_num_layers", "vae_codebook_dim", "vae_hidden_dim", "vae_channels"):
        _positive_int(config, name)
    _positive_int(config, "vae_num_resnet_blocks", minimum=0)
    attn_dropout, ff_dropout = _probability(config, "attn_dropout"), _probability(config, "ff_dropout")
    attn_types = normalize_attn_types(config["attn_types"])

    kernel, dilation = _positive_int(config, "conv_kernel_size"), _positive_int(config, "conv_dilation")
    if kernel % 2 == 0:
        _fail(f"conv_kernel_size must be odd, got {kernel}")
    if config["rotary_emb"] and rotary_width(config["dim_head"]) == 0:
        _fail(f"dim_head {config['dim_head']} is too small for rotary embeddings (needs dim_head >= 6); "
              "raise dim_head or set rotary_emb=False")
    if config["vae"] not in VAE_KINDS:
        _fail(f"vae must be one of {', '.join(map(repr, VAE_KINDS))}, got {config['vae']!r}")
    image_size, layers = _positive_int(config, "image_size"), config["vae_num_layers"]
    # compared by bit length, never by computing 2**layers: a checkpoint may claim vae_num_layers=10**12
    if image_size & (image_size - 1) or layers > image_size.bit_length() - 1:
        _fail(f"image_size must be a power of 2 and >= 2**vae_num_layers (2**{layers}), got {image_size}")
    fmap = image_size // 2**layers
    for name in ("stable", "sandwich_norm", "shift_tokens", "rotary_emb", "share_input_output_emb"):
        if not isinstance(config[name], bool):
            _fail(f"{name} must be true or false, got {config[name]!r}")
    if config["tokenizer"] not in TOKENIZER_KINDS:
        _fail(f"tokenizer must be one of {', '.join(map(repr, TOKENIZER_KINDS))}, got {config['tokenizer']!r}")
    sha256 = config["tokenizer_sha256"]
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != 64):
        _fail(f"tokenizer_sha256 must be None or a sha256 hex digest of the vocabulary file, got {sha256!r}")
    loss_img_weight = config["loss_img_weight"]
    if isinstance(loss_img_weight, bool) or not isinstance(loss_img_weight, (int, float)) or loss_img_weight < 0:
        _fail(f"loss_img_weight must be a number >= 0, got {loss_img_weight!r}")

    vae = given_vae if isinstance(given_vae, DiscreteVAE) else None
    if config["vae"] == "discrete" and vae is None:
        vae = DiscreteVAE(
            image_size=image_size, num_tokens=config["num_image_tokens"], codebook_dim=config["vae_codebook_dim"],
            num_layers=layers, num_resnet_blocks=config["vae_num_resnet_blocks"],
            hidden_dim=config["vae_hidden_dim"], channels=config["vae_channels"],
        )
    transformer = DalleTransformer(
        dim=config["dim"], depth=config["depth"], text_len=config["text_seq_len"] + 1, image_size=fmap, form=form,
        heads=config["heads"], dim_head=config["dim_head"], ff_mult=config["ff_mult"],
        attn_dropout=attn_dropout, ff_dropout=ff_dropout, attn_types=attn_types,
        conv_kernel_size=kernel, conv_dilation=dilation, stable=config["stable"],
        sandwich_norm=config["sandwich_norm"], shift_tokens=config["shift_tokens"],
        rotary_emb=config["rotary_emb"],
        shared_attn_ids=_shared_ids(config, "shared_attn_ids"), shared_ff_ids=_shared_ids(config, "shared_ff_ids"),
    )
    model = Dalle(
        transformer=transformer, dim=config["dim"], num_text_tokens=config["num_text_tokens"],
        text_seq_len=config["text_seq_len"], num_image_tokens=config["num_image_tokens"], vae=vae,
        loss_img_weight=float(loss_img_weight), stable=config["stable"],
        share_input_output_emb=config["share_input_output_emb"],
        tokenizer=config["tokenizer"], tokenizer_sha256=sha256,
    )
    model.vae_record = vae_record
    if given_vae is not None and vae is None:
        model.attach_decoder(given_vae)
    return model
