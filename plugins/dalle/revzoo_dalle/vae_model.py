"""The registered "discrete-vae" model: DALLE-pytorch's DiscreteVAE, trained, saved and imported on its own.

DALL-E's workflow trains the VAE first (upstream's train_vae.py), then the transformer on
its codes; `revzoo.create("dalle-rev", vae=...)` takes this model or its file. The VAE has
no reversible coupling: it holds an empty ReversibleSequence, so its two forms are one
function and revzoo's save, load and convert treat it like every other model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import revzoo

from .vae import DEFAULT_NORMALIZATION, DiscreteVAE

__all__ = ["VAE_DEFAULTS", "DiscreteVAEModel", "build_discrete_vae"]

VAE_DEFAULTS: dict[str, Any] = {
    "image_size": 128, "num_tokens": 512, "codebook_dim": 256, "num_layers": 3, "num_resnet_blocks": 0,
    "hidden_dim": 64, "channels": 3, "smooth_l1_loss": False, "temperature": 0.9, "straight_through": False,
    "reinmax": False, "kl_div_loss_weight": 0.0, "normalization": [list(t) for t in DEFAULT_NORMALIZATION],
}


class DiscreteVAEModel(revzoo.ZooModel):
    """`DiscreteVAE` as a zoo model: the same calls (`forward`, `get_codebook_indices`, `decode`) on `self.vae`."""

    def __init__(self, vae: DiscreteVAE, form: str = "sequential") -> None:
        super().__init__()
        self.vae = vae
        self.stack = revzoo.ReversibleSequence([], form=form)  # no coupling: see the module's docstring

    @property
    def num_tokens(self) -> int:
        return self.vae.num_tokens

    @property
    def image_size(self) -> int:
        return self.vae.image_size

    def get_codebook_indices(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.get_codebook_indices(images)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(indices)

    def forward(self, images: torch.Tensor, return_loss: bool = False, return_recons: bool = False,
                return_logits: bool = False, temp: float | None = None) -> Any:
        """As DALLE-pytorch's `DiscreteVAE.forward`: the reconstruction, or logits, loss, (loss, reconstruction)."""
        return self.vae(images, return_loss=return_loss, return_recons=return_recons, return_logits=return_logits,
                        temp=temp)


def _fail(message: str) -> None:
    raise revzoo.ConfigError(message)


def _check(config: dict[str, Any]) -> None:
    unknown = sorted(set(config) - set(VAE_DEFAULTS))
    if unknown:
        _fail(f"unknown discrete-vae option(s) {unknown}; valid options: {', '.join(sorted(VAE_DEFAULTS))}")
    for name in ("image_size", "num_tokens", "codebook_dim", "num_layers", "hidden_dim", "channels"):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"{name} must be an integer >= 1, got {value!r}")
    blocks = config["num_resnet_blocks"]
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        _fail(f"num_resnet_blocks must be an integer >= 0, got {blocks!r}")
    size, layers = config["image_size"], config["num_layers"]
    if not math.log2(size).is_integer() or size < 2**layers:
        _fail(f"image_size must be a power of 2 and >= 2**num_layers ({2 ** layers}), got {size}")
    for name in ("smooth_l1_loss", "straight_through", "reinmax"):
        if not isinstance(config[name], bool):
            _fail(f"{name} must be true or false, got {config[name]!r}")
    for name in ("temperature", "kl_div_loss_weight"):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            _fail(f"{name} must be a number >= 0, got {value!r}")
    norm = config["normalization"]
    if norm is not None and (len(norm) != 2 or any(len(t) < config["channels"] for t in norm)):
        _fail(f"normalization must be None or [means, stds] with one value per channel, got {norm!r}")


def build_discrete_vae(*, form: str = "sequential", **config: Any) -> DiscreteVAEModel:
    """Builds a `DiscreteVAEModel` from a full "discrete-vae" config; raises revzoo.ConfigError for bad values."""
    config = {**VAE_DEFAULTS, **config}
    _check(config)
    return DiscreteVAEModel(DiscreteVAE(**config), form=form)
