"""The plugin's hooks: the ViT architectures and the "timm" checkpoint format."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

import revzoo

from .checkpoint import read_timm, write_timm
from .convert import from_timm, to_timm
from .factory import create_timm_vit
from .model import MASK_ROUTES, RevViT

__all__ = ["build_timm_vit", "example_images", "register_architectures", "register_formats"]

CARD = "model_cards/vit.md"
SMALL = {"img_size": 64}  # what `revzoo bench` measures: the variant's width, 17 tokens

# name -> (timm model, embed_dim, num_heads, description); all patch 16 at 224 pixels, depth 12.
_VARIANTS = {
    "vit-tiny": ("vit_tiny_patch16_224", 192, 3, "ViT-Ti/16 (5.7M params): timm's vit_tiny_patch16_224"),
    "vit-small": ("vit_small_patch16_224", 384, 6, "ViT-S/16 (22M params): timm's vit_small_patch16_224"),
    "vit-base": ("vit_base_patch16_224", 768, 12, "ViT-B/16 (86M params): timm's vit_base_patch16_224"),
}


def _variant_defaults(embed_dim: int, num_heads: int) -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 16,
        "in_chans": 3,
        "num_classes": 1000,
        "global_pool": "token",
        "embed_dim": embed_dim,
        "depth": 12,
        "num_heads": num_heads,
        "mlp_ratio": 4.0,
        "class_token": True,
        "reg_tokens": 0,
        "drop_rate": 0.0,
        "pos_drop_rate": 0.0,
        "patch_drop_rate": 0.0,
        "proj_drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "drop_path_rate": 0.0,
    }


def build_timm_vit(*, form: str, model_name: str | None = None, **timm_kwargs: Any) -> RevViT:
    """Returns a RevViT of `timm.create_model(model_name, pretrained=False, **timm_kwargs)` in `form`."""
    if model_name is None:
        raise revzoo.ConfigError(
            "the timm architecture needs a timm model name: revzoo.create('timm/vit_small_patch16_224')"
        )
    return RevViT(create_timm_vit(model_name, timm_kwargs), form=form)


def example_images(model: RevViT, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((images,), {})`: four seeded random images of the size and channels `model` takes."""
    height, width = model.patch_embed.img_size
    return (torch.randn(4, model.in_chans, height, width, generator=generator),), {}


@revzoo.hookimpl
def register_architectures(register) -> None:
    """Registers vit-tiny, vit-small, vit-base (and their -rev forms) and "timm" for any timm ViT by name."""
    for name, (timm_name, embed_dim, num_heads, description) in _VARIANTS.items():
        register(revzoo.ArchSpec(
            name=name,
            builder=partial(build_timm_vit, model_name=timm_name),
            description=description,
            defaults=_variant_defaults(embed_dim, num_heads),
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
