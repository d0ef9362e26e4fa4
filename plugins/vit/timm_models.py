"""Registers revzoo's ViT names in timm's own registry, so that `timm.create_model("vit-small-rev")` works.

timm has no plugin discovery: its registry is filled by importing modules whose functions carry
`@register_model`. Importing this module does that for vit-tiny, vit-small, vit-base and their
`-rev` forms; `timm.create_model(NAME, **kwargs)` then returns `revzoo.create(NAME, **kwargs)`,
and `features_only=True` wraps it in timm's FeatureGetterNet, as timm does for its ViTs. The open
family `timm/<name>` cannot be registered (timm looks names up exactly, so `timm-rev/vit_base_patch16_224`
would be one unknown name): use `revzoo.create("timm-rev/NAME")` or `revzoo.from_timm(timm.create_model(NAME))`.

Example:
    >>> import timm, revzoo_vit.timm_models
    >>> model = timm.create_model("vit-small-rev", num_classes=10)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.models import register_model
from timm.models._features import FeatureGetterNet
from torch import nn

import revzoo

from .config import VARIANTS

__all__ = ["TIMM_NAMES"]

TIMM_NAMES = tuple(name for variant in VARIANTS for name in (variant, f"{variant}-rev"))


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    """Returns timm's kind of model function for the revzoo name `name`."""

    def create(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        cache_dir: Any = None,
        features_only: bool = False,
        out_indices: int | list[int] = 3,
        **kwargs: Any,
    ) -> nn.Module:
        if pretrained:
            raise revzoo.ConfigError(
                f"{name!r} has no pretrained weights to download (revzoo never downloads); load trained ones with "
                "revzoo.create('hf-hub:ORG/NAME'), revzoo.load(PATH), or timm.create_model(..., checkpoint_path=PATH)"
            )
        model = revzoo.create(name, **kwargs)
        return FeatureGetterNet(model, out_indices=out_indices) if features_only else model

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"revzoo's {name!r} (a RevViT), created through timm: revzoo.create({name!r}, **kwargs)."
    return create


for _name in TIMM_NAMES:
    register_model(_entrypoint(_name))
__all__ = ["TIMM_NAMES"]  # timm's register_model appended the model names, which are not attributes here
