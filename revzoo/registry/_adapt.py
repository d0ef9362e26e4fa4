"""Adapters: revzoo models made from another library's model instances, sharing their weights, and back."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import PluginError, UnknownAdapterError
from ._plugins import loaded_registry
from ._registry import unknown_name_error
from ._spec import Adapter

__all__ = ["from_timm", "get_adapter", "to_timm", "unwrap", "wrap"]


def get_adapter(name: str) -> Adapter:
    """Returns the Adapter registered under `name` (e.g. "timm", from the vit plugin)."""
    adapters = loaded_registry().adapters
    if name not in adapters:
        raise unknown_name_error(name, adapters, "adapter", UnknownAdapterError, "plugins")
    return adapters[name]


def wrap(source: str, model: Any, form: str = "reversible", **options: Any) -> nn.Module:
    """Returns a revzoo model in `form` around `model`, a model of library `source`, sharing its weights."""
    return get_adapter(source).wrap(model, form=form, **options)


def unwrap(source: str, model: nn.Module) -> Any:
    """Returns the `source` library's model behind a revzoo model made by `wrap` or `create`."""
    adapter = get_adapter(source)
    if adapter.unwrap is None:
        raise PluginError(f"adapter {source!r} can wrap models but not give them back")
    return adapter.unwrap(model)


def from_timm(model: nn.Module, form: str = "reversible", **options: Any) -> nn.Module:
    """Returns a revzoo ViT around a timm VisionTransformer, sharing its weights (the vit plugin's "timm" adapter).

    Example:
        >>> rev = revzoo.from_timm(timm.create_model("vit_tiny_patch16_224"), form="reversible")
    """
    return wrap("timm", model, form=form, **options)


def to_timm(model: nn.Module) -> nn.Module:
    """Returns the plain timm VisionTransformer behind a revzoo ViT, sharing its weights."""
    return unwrap("timm", model)
