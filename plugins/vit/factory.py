"""Builds plain timm ViTs for the adapter, with clear errors for names and kwargs it cannot take."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from timm.models import model_entrypoint
from timm.models.vision_transformer import VisionTransformer

import revzoo

from .model import check_supported_vit

__all__ = ["create_timm_vit"]

# timm modules whose entry points build plain VisionTransformers (hybrids swap only the patch embedding; DeiT's
# distilled models are a subclass, refused after building).
_VIT_MODULES = ("timm.models.vision_transformer", "timm.models.vision_transformer_hybrid", "timm.models.deit")


def _check_name(model_name: Any) -> None:
    if not isinstance(model_name, str) or not model_name:
        raise revzoo.ConfigError(
            f"timm model name {model_name!r} is not a name; use e.g. revzoo.create('timm/vit_small_patch16_224')"
        )
    if ":" in model_name:
        raise revzoo.ConfigError(
            f"timm model {model_name!r}: revzoo builds from timm's registry only (no hf-hub:/local-dir: sources); "
            "bring weights in with `revzoo import timm IN OUT --model NAME`"
        )
    architecture = model_name.split(".", 1)[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models("vit_*"), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise revzoo.ConfigError(f"unknown timm model {model_name!r}{hint} (see timm.list_models('vit_*'))")
    module = model_entrypoint(architecture).__module__
    if module not in _VIT_MODULES:
        raise revzoo.ConfigError(
            f"timm model {model_name!r} comes from {module}, not a VisionTransformer; revzoo's timm adapter "
            "takes the ViTs of timm.models.vision_transformer, e.g. 'vit_small_patch16_224'"
        )


def create_timm_vit(model_name: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """Returns `timm.create_model(model_name, pretrained=False, **kwargs)`, checked to be a wrappable ViT.

    Raises:
        revzoo.ConfigError: a non-ViT or unknown name, `pretrained=True`, `checkpoint_path`, or kwargs timm rejects.
    """
    _check_name(model_name)
    if kwargs.get("pretrained") or kwargs.get("checkpoint_path"):
        raise revzoo.ConfigError(
            "pretrained=True and checkpoint_path are not supported (revzoo never downloads, and reads weights "
            "without pickle): import timm weights with `revzoo import timm IN OUT --model NAME`"
        )
    timm_kwargs = {key: value for key, value in kwargs.items() if key not in ("pretrained", "checkpoint_path")}
    try:
        vit = timm.create_model(model_name, pretrained=False, **timm_kwargs)
    except (TypeError, AssertionError, ValueError) as err:
        raise revzoo.ConfigError(f"timm rejected {model_name!r} with {timm_kwargs}: {err}") from err
    check_supported_vit(vit)
    return vit
