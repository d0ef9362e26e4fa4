"""from_timm / to_timm: move between a timm VisionTransformer and a revzoo RevViT, sharing weights."""

from __future__ import annotations

import json
import warnings
from typing import Any

from timm.models import get_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import revzoo

from .model import RevViT

__all__ = ["config_from_timm", "from_timm", "to_timm"]


def config_from_timm(vit: nn.Module) -> dict[str, Any]:
    """Returns the revzoo config ("timm" architecture) that rebuilds `vit`: its timm name and creation kwargs.

    timm.create_model records both (`pretrained_cfg["architecture"]` and `["tag"]`, `_model_args`).
    """
    pretrained_cfg = getattr(vit, "pretrained_cfg", {})
    name = pretrained_cfg.get("architecture")
    tag = pretrained_cfg.get("tag")
    if name and tag and tag != getattr(get_pretrained_cfg(name), "tag", None):
        name = f"{name}.{tag}"  # a non-default tag's config sets other defaults, such as num_classes
    if not name:
        raise revzoo.ConfigError(
            f"this {type(vit).__name__} was not built by timm.create_model, so its name and kwargs are unknown "
            "and revzoo.save could not rebuild it; build it with timm.create_model(NAME, ...)"
        )
    config = {"model_name": name, **getattr(vit, "_model_args", {})}
    config.pop("pretrained", None)
    try:
        return json.loads(json.dumps(config))  # tuples become lists, as after a save/load round trip
    except TypeError as err:
        raise revzoo.ConfigError(
            f"timm kwargs of {name!r} are not JSON-serialisable, so revzoo cannot save them: {err}"
        ) from err


def from_timm(vit: VisionTransformer, form: str = "reversible", execution: str = "invert") -> RevViT:
    """Returns a RevViT wrapping `vit`, sharing its parameters (training one trains the other's tensors).

    In the sequential form it computes exactly `vit`'s function; the reversible form is a
    different function of the same parameters. Sets `revzoo_architecture = "timm"` and
    `revzoo_config = {"model_name": ..., **timm kwargs}` so revzoo.save/load work.

    Example:
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
        >>> rev = from_timm(vit, form="reversible")
    """
    config = config_from_timm(vit)
    model = RevViT(vit, form=form, execution=execution)
    model.revzoo_architecture = "timm"
    model.revzoo_config = config
    return model


def to_timm(model: RevViT) -> VisionTransformer:
    """Returns the plain timm VisionTransformer behind `model`, sharing its parameters.

    The timm model is brought up to date with `model` first (modules replaced since, e.g.
    by reset_classifier, and the train/eval mode). timm's model always computes the
    sequential form, so a model trained in the reversible form gives different outputs
    there: a UserWarning says so.
    """
    if not isinstance(model, RevViT):
        raise TypeError(f"to_timm takes a revzoo ViT (RevViT), got {type(model).__name__}")
    if revzoo.get_form(model) == "reversible":
        warnings.warn(
            "to_timm: the model is in the reversible form, but timm's VisionTransformer computes the "
            "sequential form, so its outputs differ from the model's",
            UserWarning,
            stacklevel=2,
        )
    vit = model.synced_timm_model()
    for name in ("revzoo_architecture", "revzoo_config"):
        if hasattr(model, name):
            setattr(vit, name, getattr(model, name))
    return vit
