"""DALLE-pytorch's train_vae.py checkpoints (`{"hparams", "weights"}`) as revzoo "discrete-vae" models, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import revzoo

from .vae_model import VAE_DEFAULTS

__all__ = ["is_train_vae_checkpoint", "read_train_vae", "write_train_vae"]

# what train_vae.py records; the other DiscreteVAE options are its class defaults unless the file says otherwise
_RECORDED = ("image_size", "num_layers", "num_tokens", "codebook_dim", "hidden_dim", "num_resnet_blocks")


def is_train_vae_checkpoint(obj: Mapping[str, Any]) -> bool:
    """True for train_vae.py's dict: VAE hparams (no transformer `dim`) and encoder weights."""
    hparams, weights = obj.get("hparams"), obj.get("weights")
    return (isinstance(hparams, Mapping) and "dim" not in hparams and isinstance(weights, Mapping)
            and any(str(key).startswith("encoder.") for key in weights))


def read_train_vae(obj: Mapping[str, Any]) -> revzoo.ImportedCheckpoint:
    """Reads train_vae.py's `{"hparams", "weights"}` into a "discrete-vae" model (tensors under `vae.`)."""
    hparams = dict(obj["hparams"])
    upstream_defaults = {"image_size": 256, "num_tokens": 512, "codebook_dim": 512, "num_layers": 3,
                         "num_resnet_blocks": 0, "hidden_dim": 64}
    config = {**VAE_DEFAULTS, **upstream_defaults, **hparams}
    unknown = sorted(set(config) - set(VAE_DEFAULTS))
    if unknown:
        raise revzoo.CheckpointError(f"DiscreteVAE hparams {unknown} are not supported by revzoo's discrete-vae")
    if isinstance(config["normalization"], (tuple, list)):
        config["normalization"] = [list(t) for t in config["normalization"]]
    tensors = {f"vae.{key}": value for key, value in obj["weights"].items()}
    return revzoo.ImportedCheckpoint(architecture="discrete-vae", config=config, form="sequential", tensors=tensors)


def write_train_vae(model: nn.Module) -> dict[str, Any]:
    """Returns train_vae.py's dict for a "discrete-vae" model; options that differ from upstream's defaults go in hparams."""
    config = {**VAE_DEFAULTS, **model.revzoo_config}
    hparams = {name: config[name] for name in _RECORDED}
    upstream_class_defaults = {"channels": 3, "smooth_l1_loss": False, "temperature": 0.9, "straight_through": False,
                               "reinmax": False, "kl_div_loss_weight": 0.0,
                               "normalization": VAE_DEFAULTS["normalization"]}
    hparams.update({name: config[name] for name, default in upstream_class_defaults.items() if config[name] != default})
    weights: dict[str, torch.Tensor] = {key[len("vae."):]: value for key, value in model.state_dict().items()}
    return {"hparams": hparams, "weights": weights}
