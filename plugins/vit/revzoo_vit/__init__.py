"""revzoo_vit: reversible Vision Transformers from timm's VisionTransformer (revzoo's built-in "vit" plugin).

Each timm `Block` becomes one reversible block, f = drop_path1(ls1(attn(norm1(x)))) and
g = drop_path2(ls2(mlp(norm2(x)))), after the Reversible Vision Transformer
(Mangalam et al., CVPR 2022). Everything else is timm's own modules and methods.
Registers vit-tiny, vit-small, vit-base and "timm/<name>", the "timm" checkpoint format
and the "timm" adapter behind revzoo.from_timm / revzoo.to_timm. Also the paper's own RevViT
(revvit-tiny, revvit-small, revvit-base: no class token, the two streams concatenated under a
LayerNorm of twice the width, mean-pooled; `PaperRevViT`) and the SlowFast and mmpretrain
formats of its published weights.

timm is imported on first use (a model built, a file read, a name below accessed), not with
the plugin, so that `revzoo list` and `revzoo info` start without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

import revzoo

from .branches import MASK_ROUTES, PAIRED_ROUTES, AttentionBranch, MlpBranch
from .config import REVVIT_VARIANTS, VARIANTS, build_revvit, build_timm_vit, revvit_defaults, variant_defaults

if TYPE_CHECKING:
    from .adapter import config_from_timm as config_from_timm
    from .adapter import from_timm as from_timm
    from .adapter import to_timm as to_timm
    from .checkpoint import read_timm as read_timm
    from .checkpoint import revzoo_key_to_timm as revzoo_key_to_timm
    from .checkpoint import timm_key_to_revzoo as timm_key_to_revzoo
    from .checkpoint import write_timm as write_timm
    from .model import RevViT as RevViT
    from .revvit import PaperRevViT as PaperRevViT
    from .revvit_checkpoint import read_mmpretrain_revvit as read_mmpretrain_revvit
    from .revvit_checkpoint import read_slowfast_revvit as read_slowfast_revvit
    from .revvit_checkpoint import write_mmpretrain_revvit as write_mmpretrain_revvit
    from .revvit_checkpoint import write_slowfast_revvit as write_slowfast_revvit

# names whose modules import timm: imported on first access (PEP 562)
_DEFERRED = {
    "RevViT": ".model",
    "PaperRevViT": ".revvit",
    "read_mmpretrain_revvit": ".revvit_checkpoint",
    "read_slowfast_revvit": ".revvit_checkpoint",
    "write_mmpretrain_revvit": ".revvit_checkpoint",
    "write_slowfast_revvit": ".revvit_checkpoint",
    "config_from_timm": ".adapter",
    "from_timm": ".adapter",
    "to_timm": ".adapter",
    "read_timm": ".checkpoint",
    "revzoo_key_to_timm": ".checkpoint",
    "timm_key_to_revzoo": ".checkpoint",
    "write_timm": ".checkpoint",
}


def __getattr__(name: str) -> Any:
    if name not in _DEFERRED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_DEFERRED[name], __name__)
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "timm":
            raise
        raise revzoo.PluginError("the vit plugin needs timm, which is not installed: pip install 'revzoo[vit]'") from err
    value = getattr(module, name)
    globals()[name] = value
    return value


def _on_call(name: str) -> Callable[..., Any]:
    """Returns a function that imports `name` (with timm) when first called, then calls it."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return __getattr__(name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call

__all__ = [
    "AttentionBranch",
    "MlpBranch",
    "PaperRevViT",
    "RevViT",
    "build_timm_vit",
    "config_from_timm",
    "example_images",
    "from_timm",
    "read_mmpretrain_revvit",
    "read_slowfast_revvit",
    "read_timm",
    "register_adapters",
    "register_architectures",
    "register_formats",
    "revzoo_key_to_timm",
    "timm_key_to_revzoo",
    "to_timm",
    "write_mmpretrain_revvit",
    "write_slowfast_revvit",
    "write_timm",
]

CARD = "model_card.md"
REVVIT_ALIASES = {"revvit-small": ("revvit-s",), "revvit-base": ("revvit-b",)}
SMALL = {"img_size": 64}  # what `revzoo bench` measures: the variant's width, 17 tokens


def example_images(model: RevViT | PaperRevViT, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((images,), {})`: four seeded random images of the size, channels, dtype and device `model` takes."""
    height, width = model.patch_embed.img_size
    weight = model.patch_embed.proj.weight
    images = torch.randn(4, model.in_chans, height, width, generator=generator, dtype=weight.dtype)
    return (images.to(weight.device),), {}


@revzoo.hookimpl
def register_architectures(register) -> None:
    """Registers vit-tiny, vit-small, vit-base (and their -rev forms), "timm" for any timm ViT by name, and the paper's
    RevViT as revvit-tiny, revvit-small (alias revvit-s), revvit-base (alias revvit-b)."""
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
    for name, (embed_dim, num_heads, description) in REVVIT_VARIANTS.items():
        register(revzoo.ArchSpec(
            name=name,
            builder=build_revvit,
            description=description,
            defaults=revvit_defaults(embed_dim, num_heads),
            forms=("sequential", "reversible"),
            routes=PAIRED_ROUTES,
            card=CARD,
            aliases=REVVIT_ALIASES.get(name, ()),
            example_inputs=example_images,
            small=SMALL,
        ))


@revzoo.hookimpl
def register_formats(register) -> None:
    """Registers "timm" (timm VisionTransformer state dicts) and the paper RevViT's "slowfast-revvit" and
    "mmpretrain-revvit"."""
    register(revzoo.CheckpointFormat(
        name="timm",
        description="timm VisionTransformer state dict (.safetensors/.pth); pass the timm model name as model=",
        read=_on_call("read_timm"),
        write=_on_call("write_timm"),
        architectures=(*VARIANTS, "timm"),
    ))
    register(revzoo.CheckpointFormat(
        name="slowfast-revvit",
        description="SlowFast's RevViT checkpoint (REV_VIT_S/B.pyth: model_state, cfg); options num_heads, img_size",
        read=_on_call("read_slowfast_revvit"),
        write=_on_call("write_slowfast_revvit"),
        architectures=tuple(REVVIT_VARIANTS),
    ))
    register(revzoo.CheckpointFormat(
        name="mmpretrain-revvit",
        description="mmpretrain's RevVisionTransformer classifier (backbone.*, head.fc.*); options num_heads, img_size",
        read=_on_call("read_mmpretrain_revvit"),
        write=_on_call("write_mmpretrain_revvit"),
        architectures=tuple(REVVIT_VARIANTS),
    ))


@revzoo.hookimpl
def register_adapters(register) -> None:
    """Registers the "timm" adapter behind revzoo.from_timm / revzoo.to_timm."""
    register(revzoo.Adapter(
        name="timm",
        description="a timm VisionTransformer instance as a revzoo ViT sharing its weights, and back",
        wrap=_on_call("from_timm"),
        unwrap=_on_call("to_timm"),
    ))
