"""The vit configs: the named variants, and RevViTs and plain timm ViTs built from timm names and kwargs.

timm is imported when a model is built, not with this module, so `revzoo list` and `revzoo info` start without it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import revzoo

from .branches import SUPPORTED_TIMM

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

    from .model import RevViT
    from .revvit import PaperRevViT

__all__ = [
    "REVVIT_VARIANTS", "VARIANTS", "build_revvit", "build_timm_vit", "create_timm_vit", "revvit_defaults",
    "variant_defaults",
]

# timm modules whose entry points build plain VisionTransformers (hybrids swap only the patch embedding; DeiT's
# distilled models are a subclass, refused after building).
_VIT_MODULES = ("timm.models.vision_transformer", "timm.models.vision_transformer_hybrid", "timm.models.deit")


def _check_name(model_name: Any) -> None:
    import timm
    from timm.models import model_entrypoint

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
        raise revzoo.ConfigError(f"timm model {model_name!r} comes from {module}: {SUPPORTED_TIMM}")


# timm kwargs that timm passes on unchecked (num_heads=0 divides by zero, mlp_ratio=-1 reaches nn.Linear): the
# smallest valid value of each. Sizes may be an int or an (height, width) pair.
_MINIMUM = {"img_size": 1, "patch_size": 1, "in_chans": 1, "embed_dim": 1, "depth": 0, "num_heads": 1,
            "num_classes": 0, "reg_tokens": 0}
_POSITIVE = ("mlp_ratio",)
_RATES = ("drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(kwargs: dict[str, Any]) -> None:
    """Raises revzoo.ConfigError for a size, ratio or rate that timm would crash on or build nonsense from."""
    for name, minimum in _MINIMUM.items():
        value = kwargs.get(name, minimum)
        parts = value if name in ("img_size", "patch_size") and isinstance(value, (list, tuple)) else (value,)
        if not parts or not all(_is_int(part) and part >= minimum for part in parts):
            raise revzoo.ConfigError(f"timm option {name} must be an integer >= {minimum}, got {value!r:.80}")
    for name in _POSITIVE:
        value = kwargs.get(name, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise revzoo.ConfigError(f"timm option {name} must be a number > 0, got {value!r:.80}")
    for name in _RATES:
        value = kwargs.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise revzoo.ConfigError(f"timm option {name} must be a number in [0, 1), got {value!r:.80}")


def create_timm_vit(model_name: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """Returns `timm.create_model(model_name, pretrained=False, **kwargs)`, checked to be a wrappable ViT.

    Raises:
        revzoo.UnknownOptionError: a keyword argument timm's constructor does not take (a TypeError too).
        revzoo.ConfigError: a non-ViT or unknown name, `pretrained=True`, `checkpoint_path`, or kwargs timm rejects.
    """
    import timm

    from .model import check_supported_vit

    _check_name(model_name)
    if kwargs.get("pretrained") or kwargs.get("checkpoint_path"):
        raise revzoo.ConfigError(
            "pretrained=True and checkpoint_path are not supported (revzoo never downloads, and reads weights "
            "without pickle): import timm weights with `revzoo import timm IN OUT --model NAME`"
        )
    timm_kwargs = {key: value for key, value in kwargs.items() if key not in ("pretrained", "checkpoint_path")}
    _check_sizes(timm_kwargs)
    try:
        vit = timm.create_model(model_name, pretrained=False, **timm_kwargs)
    except TypeError as err:  # an option timm's constructor does not take: a TypeError, as timm's own
        error = revzoo.UnknownOptionError if "unexpected keyword argument" in str(err) else revzoo.ConfigError
        raise error(f"timm rejected {model_name!r} with {timm_kwargs}: {err}") from err
    except (AssertionError, ValueError, ArithmeticError, RuntimeError) as err:
        raise revzoo.ConfigError(f"timm rejected {model_name!r} with {timm_kwargs}: {err}") from err
    check_supported_vit(vit)
    return vit

# name -> (timm model, embed_dim, num_heads, description); all patch 16 at 224 pixels, depth 12.
VARIANTS = {
    "vit-tiny": ("vit_tiny_patch16_224", 192, 3, "ViT-Ti/16 (5.7M params): timm's vit_tiny_patch16_224"),
    "vit-small": ("vit_small_patch16_224", 384, 6, "ViT-S/16 (22M params): timm's vit_small_patch16_224"),
    "vit-base": ("vit_base_patch16_224", 768, 12, "ViT-B/16 (86M params): timm's vit_base_patch16_224"),
}


def variant_defaults(embed_dim: int, num_heads: int) -> dict[str, Any]:
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
    from .model import RevViT

    return RevViT(create_timm_vit(model_name, timm_kwargs), form=form)


# The paper's RevViT (Mangalam et al., CVPR 2022): name -> (embed_dim, num_heads, description); patch 16 at 224
# pixels, depth 12, MLP ratio 4. The widths are the streams'; the head sees twice it.
REVVIT_VARIANTS = {
    "revvit-tiny": (192, 3, "RevViT-Ti (the paper's RevViT at DeiT-Ti's width; no published weights)"),
    "revvit-small": (384, 6, "RevViT-S (22M params, Mangalam et al. CVPR 2022): streams concatenated, mean-pooled"),
    "revvit-base": (768, 12, "RevViT-B (87M params, Mangalam et al. CVPR 2022): streams concatenated, mean-pooled"),
}


def revvit_defaults(embed_dim: int, num_heads: int) -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 16,
        "in_chans": 3,
        "num_classes": 1000,
        "embed_dim": embed_dim,
        "depth": 12,
        "num_heads": num_heads,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "proj_drop_rate": 0.0,
        "drop_path_rate": 0.0,
    }


def build_revvit(*, form: str, **config: Any) -> PaperRevViT:
    """Returns the paper's RevViT (`revzoo_vit.PaperRevViT`) of `config` in `form`."""
    from .revvit import build_paper_revvit

    return build_paper_revvit(form=form, **config)
