"""revzoo_vit: reversible Vision Transformers from timm's VisionTransformer (revzoo's built-in "vit" plugin).

Each timm `Block` becomes one reversible block, f = drop_path1(ls1(attn(norm1(x)))) and
g = drop_path2(ls2(mlp(norm2(x)))), after the Reversible Vision Transformer
(Mangalam et al., CVPR 2022). Everything else is timm's own modules and methods.
Registers vit-tiny, vit-small, vit-base and "timm/<name>", the "timm" checkpoint format
and the "timm" adapter behind revzoo.from_timm / revzoo.to_timm.
"""

from __future__ import annotations

from functools import partial

import torch

import revzoo

from .adapter import config_from_timm, from_timm, to_timm
from .branches import AttentionBranch, MlpBranch
from .checkpoint import read_timm, revzoo_key_to_timm, timm_key_to_revzoo, write_timm
from .config import VARIANTS, build_timm_vit, variant_defaults
from .model import MASK_ROUTES, RevViT

__all__ = [
    "AttentionBranch",
    "MlpBranch",
    "RevViT",
    "build_timm_vit",
    "config_from_timm",
    "example_images",
    "from_timm",
    "read_timm",
    "register_adapters",
    "register_architectures",
    "register_formats",
    "revzoo_key_to_timm",
    "timm_key_to_revzoo",
    "to_timm",
    "write_timm",
]

CARD = "model_cards/vit.md"
SMALL = {"img_size": 64}  # what `revzoo bench` measures: the variant's width, 17 tokens


def example_images(model: RevViT, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((images,), {})`: four seeded random images of the size and channels `model` takes."""
    height, width = model.patch_embed.img_size
    return (torch.randn(4, model.in_chans, height, width, generator=generator),), {}


@revzoo.hookimpl
def register_architectures(register) -> None:
    """Registers vit-tiny, vit-small, vit-base (and their -rev forms) and "timm" for any timm ViT by name."""
    for name, (timm_name, embed_dim, num_heads, description) in VARIANTS.items():
        register(revzoo.ArchSpec(
            name=name,
            builder=partial(build_timm_vit, model_name=timm_name),
            description=description,
            defaults=variant_defaults(embed_dim, num_heads),
            forms=("sequential", "reversible"),
            routes=MASK_ROUTES,
            card=CARD,
            open_config=True,
            example_inputs=example_images,
            small=SMALL,
        ))
    register(revzoo.ArchSpec(
        name="timm",
        builder=build_timm_vit,
        description="any timm VisionTransformer by name, e.g. timm/vit_small_patch16_224; kwargs go to timm.create_model",
        defaults={"model_name": None},
        forms=("sequential", "reversible"),
        routes=MASK_ROUTES,
        card=CARD,
        subname_key="model_name",
        open_config=True,
        example_inputs=example_images,
        small={"model_name": "vit_tiny_patch16_224", **SMALL},
    ))


@revzoo.hookimpl
def register_formats(register) -> None:
    """Registers the "timm" format: timm VisionTransformer state dicts (.safetensors or .pth)."""
    register(revzoo.CheckpointFormat(
        name="timm",
        description="timm VisionTransformer state dict (.safetensors/.pth); pass the timm model name as model=",
        read=read_timm,
        write=write_timm,
    ))


@revzoo.hookimpl
def register_adapters(register) -> None:
    """Registers the "timm" adapter behind revzoo.from_timm / revzoo.to_timm."""
    register(revzoo.Adapter(
        name="timm",
        description="a timm VisionTransformer instance as a revzoo ViT sharing its weights, and back",
        wrap=from_timm,
        unwrap=to_timm,
    ))
