"""Registers revzoo's ViT names in timm's own registry, so that `timm.create_model("vit-small-rev")` works.

timm has no plugin discovery: its registry is filled by importing modules whose functions carry
`@register_model`. Importing this module does that for vit-tiny, vit-small, vit-base and their
`-rev` forms, each with a pretrained cfg (timm's data config of the wrapped architecture, without
weights to download). `timm.create_model(NAME, **kwargs)` builds `revzoo.create(NAME, **kwargs)`
through timm's `build_model_with_cfg`, as timm builds its ViTs: `pretrained_cfg`/`default_cfg` are
set, and `features_only=True` wraps the model in timm's feature wrapper, `feature_cls` "getter"
(the default: `forward_intermediates`, NCHW maps or NLC tokens), "hook" or "fx" (the blocks' token
outputs, through forward hooks or a torch.fx graph; see `RevViT.tap_blocks`). The open family
`timm/<name>` cannot be registered (timm looks names up exactly, so `timm-rev/vit_base_patch16_224`
would be one unknown name): use `revzoo.create("timm-rev/NAME")` or `revzoo.from_timm(timm.create_model(NAME))`.

Example:
    >>> import timm, revzoo_vit.timm_models
    >>> model = timm.create_model("vit-small-rev", num_classes=10)
    >>> backbone = timm.create_model("vit-small-rev", features_only=True, out_indices=(3, 7, 11))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from timm.layers import Format
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models._features import FeatureGetterNet, FeatureHookNet
from timm.models._features_fx import FeatureGraphNet
from torch import nn

import revzoo

from .config import VARIANTS

__all__ = ["TIMM_NAMES"]

TIMM_NAMES = tuple(name for variant in VARIANTS for name in (variant, f"{variant}-rev"))

# The wrapper each feature_cls builds, and the feature layouts it can give.
_FEATURE_CLASSES = {"getter": FeatureGetterNet, "hook": FeatureHookNet, "fx": FeatureGraphNet}
_OUTPUT_FMTS = {"getter": ("NCHW", "NLC"), "hook": ("NLC",), "fx": ("NLC",)}
# What a pretrained cfg says about the input and the module names, kept from timm's cfg of the wrapped
# architecture; where its weights come from (url, hf_hub_id, file, license...) is left out.
_DATA_FIELDS = (
    "input_size", "test_input_size", "min_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "pool_size", "first_conv", "classifier",
)


def _pretrained_cfg(timm_name: str) -> dict[str, Any]:
    """Returns the pretrained cfg of a revzoo name: timm's data config of `timm_name`'s default weights, no weights."""
    timm_cfg = get_pretrained_cfg(timm_name).to_dict()
    return {
        **{field: timm_cfg[field] for field in _DATA_FIELDS if field in timm_cfg},
        "notes": (
            f"revzoo's RevViT of timm's {timm_name}, with the data config of timm's {timm_name}.{timm_cfg['tag']} "
            "weights; revzoo has no weights to download (revzoo import timm, revzoo.load or checkpoint_path=)",
        ),
    }


# timm's register_model reads this module's `default_cfgs` (its name is timm's convention).
default_cfgs = generate_default_cfgs({
    name: _pretrained_cfg(timm_name)
    for variant, (timm_name, *_) in VARIANTS.items()
    for name in (variant, f"{variant}-rev")
})


def _feature_kind(feature_cls: Any) -> str:
    """Returns "getter", "hook" or "fx" for timm's feature_cls (a name, or one of timm's wrapper classes)."""
    if isinstance(feature_cls, str):
        name = feature_cls.lower()
        kind = "hook" if "hook" in name else name  # timm's matching: 'hook' anywhere in the name
        if kind in _FEATURE_CLASSES:
            return kind
    elif isinstance(feature_cls, type):
        for kind, cls in _FEATURE_CLASSES.items():
            if issubclass(feature_cls, cls):
                return kind
    raise revzoo.ConfigError(
        f"feature_cls {feature_cls!r} cannot wrap a RevViT; use 'getter' (forward_intermediates, the default), "
        "'hook' (forward hooks) or 'fx' (a torch.fx graph); 'list' and 'dict' rebuild a model as a chain of its "
        "child modules, which a ViT is not"
    )


def _features(
    name: str,
    features_only: bool,
    out_indices: Any,
    feature_cls: Any,
    output_fmt: str | None,
    feature_cfg: dict[str, Any] | None,
) -> tuple[dict[str, Any], str | None]:
    """Returns build_model_with_cfg's feature_cfg, and the feature kind ("getter", "hook", "fx"; None: no features).

    The defaults are timm's for its ViTs (the last 3 blocks, the "getter"); feature_cfg's
    entries win over the defaults, and feature_cls, out_indices and output_fmt over feature_cfg.
    """
    if not features_only:
        given = [key for key, value in (("feature_cls", feature_cls), ("output_fmt", output_fmt)) if value is not None]
        if given:
            raise revzoo.UnknownOptionError(f"{name!r}: {', '.join(given)} apply to features_only=True only")
        return {}, None
    config = {"out_indices": 3, "feature_cls": "getter", **(feature_cfg or {})}
    if out_indices is not None:
        config["out_indices"] = out_indices
    if feature_cls is not None:
        config["feature_cls"] = feature_cls
    if output_fmt is not None:
        config["output_fmt"] = output_fmt
    kind = _feature_kind(config["feature_cls"])
    config["feature_cls"] = _FEATURE_CLASSES[kind] if isinstance(config["feature_cls"], str) else config["feature_cls"]
    if kind == "hook" and (config.get("flatten_sequential") or config.get("no_rewrite") is False):
        raise revzoo.ConfigError(
            f"{name!r}: feature_cls 'hook' hooks the RevViT as it is (no_rewrite); flatten_sequential and "
            "no_rewrite=False rebuild it as a chain of its child modules, which a ViT is not"
        )
    try:
        fmt = Format(config.get("output_fmt", _OUTPUT_FMTS[kind][0])).value
    except ValueError:
        fmt = None
    if fmt not in _OUTPUT_FMTS[kind]:
        gives = " or ".join(map(repr, _OUTPUT_FMTS[kind]))
        what = "" if kind == "getter" else " (the blocks' token outputs, prefix tokens included; NCHW maps: 'getter')"
        raise revzoo.ConfigError(f"{name!r}: feature_cls {kind!r} gives output_fmt {gives}{what}, "
                                 f"not {config['output_fmt']!r}")
    config["output_fmt"] = fmt
    return config, kind


def _build(name: str, tap: Any, **kwargs: Any) -> nn.Module:
    """timm's model_cls for `name`: revzoo.create, with the blocks `tap` (out_indices) tapped for a hook/fx wrapper."""
    model = revzoo.create(name, **kwargs)
    if tap is not None:
        model.tap_blocks(tap if isinstance(tap, int) else list(tap))
    return model


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    """Returns timm's kind of model function for the revzoo name `name`."""

    def create(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
        cache_dir: Any = None,
        features_only: bool = False,
        out_indices: int | list[int] | tuple[int, ...] | None = None,
        feature_cls: str | type | None = None,
        output_fmt: str | None = None,
        feature_cfg: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        if pretrained:
            raise revzoo.ConfigError(
                f"{name!r} has no pretrained weights to download (revzoo never downloads); load trained ones with "
                "revzoo.create('hf-hub:ORG/NAME'), revzoo.load(PATH), or timm.create_model(..., checkpoint_path=PATH)"
            )
        config, kind = _features(name, features_only, out_indices, feature_cls, output_fmt, feature_cfg)
        tap = config["out_indices"] if kind in ("hook", "fx") else None
        return build_model_with_cfg(
            partial(_build, name, tap),
            name,
            pretrained=False,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=pretrained_cfg_overlay,
            cache_dir=cache_dir,
            feature_cfg=config,
            features_only=features_only,
            **kwargs,
        )

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"revzoo's {name!r} (a RevViT), created through timm: revzoo.create({name!r}, **kwargs)."
    return create


for _name in TIMM_NAMES:
    register_model(_entrypoint(_name))
__all__ = ["TIMM_NAMES"]  # timm's register_model appended the model names, which are not attributes here
