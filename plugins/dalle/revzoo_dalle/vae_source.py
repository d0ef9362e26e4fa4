"""What `create("dalle", vae=...)` accepts: a kind, a discrete-vae model or file, or any decoder of image tokens.

The decoder protocol, for VAEs whose weights revzoo does not ship (OpenAI's, VQGAN's), is
what DALLE-pytorch reads from its VAEs:

- `decode(tokens)`: image token ids (batch, fmap**2), row by row, to images (batch, channels, size, size);
- `num_tokens`: the codebook size; `image_size`: the side of the images; `num_layers`: the grid
  side is `image_size // 2**num_layers`;
- optionally `get_codebook_indices(images)`, to prime generation or train from images.

Such a decoder is attached, not owned: its weights are not saved with the model (the file
records `vae="none"`), and it stays on the device it is on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import revzoo

from .vae import DEFAULT_NORMALIZATION, DiscreteVAE
from .vae_checkpoint import is_train_vae_checkpoint, read_train_vae
from .vae_model import DiscreteVAEModel, build_discrete_vae

__all__ = ["VAE_KINDS", "resolve_vae"]

VAE_KINDS: tuple[str, ...] = ("discrete", "none")
_PROTOCOL = ("decode", "num_tokens", "image_size", "num_layers")


def _fail(message: str) -> None:
    raise revzoo.ConfigError(message)


def _load_vae_file(path: Path) -> DiscreteVAEModel:
    if path.suffix.lower() == ".safetensors":
        model = revzoo.load(path)
    else:  # a train_vae.py checkpoint, read without pickle
        obj = revzoo.read_foreign(path)
        if not isinstance(obj, dict) or not is_train_vae_checkpoint(obj):
            _fail(f"vae file {str(path)!r} is not a VAE (train_vae.py) checkpoint; a DALL-E checkpoint holds its "
                  "VAE already (revzoo import dalle-pytorch)")
        imported = read_train_vae(obj)
        model = build_discrete_vae(**imported.config)
        model.load_state_dict(dict(imported.tensors), strict=True)
    if not isinstance(model, DiscreteVAEModel):
        _fail(f"vae file {str(path)!r} holds a {model.revzoo_architecture!r} model, not a discrete-vae")
    return model


def _discrete_record(vae: DiscreteVAE) -> dict[str, Any]:
    if vae.normalization not in (DEFAULT_NORMALIZATION, tuple(t[: vae.channels] for t in DEFAULT_NORMALIZATION)):
        _fail(f"the VAE's normalization {vae.normalization} is not DALLE-pytorch's default, which DALL-E checkpoints "
              "assume (they record no normalization); train the VAE with the default")
    return {"vae": "discrete", "image_size": vae.image_size, "num_image_tokens": vae.num_tokens,
            "vae_num_layers": vae.num_layers, "vae_codebook_dim": vae.codebook.embedding_dim,
            "vae_hidden_dim": vae.hidden_dim, "vae_num_resnet_blocks": vae.num_resnet_blocks,
            "vae_channels": vae.channels}


def resolve_vae(value: Any) -> tuple[Any, dict[str, Any]]:
    """Returns `(vae, record)`: the module to use (None: build from the config) and the config entries it implies."""
    if isinstance(value, str) and value in VAE_KINDS:
        return None, {}
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            _fail(f"vae must be one of {', '.join(map(repr, VAE_KINDS))}, a discrete-vae model, or a VAE file "
                  f"(.safetensors from revzoo, .pt from train_vae.py); {str(value)!r} is none of these")
        value = _load_vae_file(path)
    if isinstance(value, DiscreteVAEModel):
        value = value.vae
    if isinstance(value, DiscreteVAE):
        return value, _discrete_record(value)
    missing = [name for name in _PROTOCOL if not hasattr(value, name)]
    if missing or not callable(value.decode):
        _fail(f"vae must be one of {', '.join(map(repr, VAE_KINDS))}, a discrete-vae model or file, or a decoder "
              f"with decode(tokens), num_tokens, image_size and num_layers; a {type(value).__name__} lacks "
              f"{', '.join(missing) or 'a callable decode'}")
    return value, {"vae": "none", "image_size": int(value.image_size), "num_image_tokens": int(value.num_tokens),
                   "vae_num_layers": int(value.num_layers)}
