"""revzoo_dalle: the DALL-E text-to-image transformer of DALLE-pytorch 1.6.6 as a revzoo plugin.

Registers the architectures "dalle" (and so "dalle-rev", its reversible form) and
"discrete-vae" (its first stage), the checkpoint format "dalle-pytorch"
(DALLE-pytorch's train_dalle.py and train_vae.py `.pt` dicts), and the command
`revzoo generate` (commands.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import revzoo

from .checkpoint import read_dalle_pytorch, write_dalle_pytorch, write_dalle_pytorch_training
from .commands import register_commands
from .config import DEFAULTS, build_dalle
from .model import Dalle
from .tokenizer import TokenizerError
from .transformer import ROUTES, DalleTransformer
from .vae import DiscreteVAE
from .vae_model import VAE_DEFAULTS, DiscreteVAEModel, build_discrete_vae

__all__ = [
    "Dalle",
    "DalleTransformer",
    "DiscreteVAE",
    "DiscreteVAEModel",
    "TokenizerError",
    "build_discrete_vae",
    "build_dalle",
    "example_inputs",
    "example_vae_inputs",
    "read_dalle_pytorch",
    "register_architectures",
    "register_commands",
    "register_formats",
    "write_dalle_pytorch",
    "write_dalle_pytorch_training",
]


def example_inputs(model: Dalle, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((text, image), {})`: two seeded rows of text ids (the last one padded) and full image ids."""
    text = torch.randint(1, model.num_text_tokens - model.text_seq_len, (2, model.text_seq_len), generator=generator)
    text[:, -1] = 0
    image = torch.randint(0, model.num_image_tokens, (2, model.image_seq_len), generator=generator)
    device = model.logits_mask.device
    return (text.to(device), image.to(device)), {}


def example_vae_inputs(model: DiscreteVAEModel, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((images,), {"return_logits": True})`: two seeded images, and a call without Gumbel noise."""
    images = torch.rand(2, model.vae.channels, model.image_size, model.image_size, generator=generator)
    return (images.to(model.vae.codebook.weight.device),), {"return_logits": True}


@revzoo.hookimpl
def register_architectures(register: Callable[[revzoo.ArchSpec], None]) -> None:
    register(revzoo.ArchSpec(
        name="dalle",
        builder=build_dalle,
        description="DALL-E text-to-image transformer (DALLE-pytorch 1.6.6) with a small discrete VAE",
        defaults=DEFAULTS,
        forms=("sequential", "reversible"),
        routes=ROUTES,
        layout=None,
        card="model_card.md",
        example_inputs=example_inputs,
        small={"dim": 128, "heads": 4, "dim_head": 32, "num_text_tokens": 1000, "text_seq_len": 32,
               "image_size": 128, "num_image_tokens": 256, "vae_hidden_dim": 32, "vae_codebook_dim": 64},
    ))
    register(revzoo.ArchSpec(
        name="discrete-vae",
        builder=build_discrete_vae,
        description="DALLE-pytorch's discrete VAE (images to codebook ids and back), DALL-E's first stage",
        defaults=VAE_DEFAULTS,
        forms=("sequential",),
        card="model_card.md",
        example_inputs=example_vae_inputs,
        small={"image_size": 64, "num_tokens": 256, "codebook_dim": 64, "hidden_dim": 32},
    ))


@revzoo.hookimpl
def register_formats(register: Callable[[revzoo.CheckpointFormat], None]) -> None:
    register(revzoo.CheckpointFormat(
        name="dalle-pytorch",
        description="DALLE-pytorch training-script checkpoint (.pt dict: hparams, vae_params, weights, opt_state)",
        read=read_dalle_pytorch,
        write=write_dalle_pytorch,
        write_training=write_dalle_pytorch_training,
    ))
