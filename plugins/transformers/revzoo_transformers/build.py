"""The "transformers" architecture: a transformers model rebuilt from its config alone, for revzoo.load and create."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

import revzoo

from .convert import wrap
from .families import FAMILIES

__all__ = ["build", "example_tokens"]

ENCODERS = frozenset({"bert", "roberta"})


def _model_class(name: str | None, model_type: str) -> type[transformers.PreTrainedModel]:
    if name is None:
        name = "AutoModelForMaskedLM" if model_type in ENCODERS else "AutoModelForCausalLM"
    found = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if found is None or not (isinstance(found, type) and (issubclass(found, transformers.PreTrainedModel)
                                                           or name.startswith("AutoModel"))):
        raise revzoo.ConfigError(f"model_class {name!r} is not a transformers model class")
    return found


def build(
    *, form: str, model_type: str | None = None, model_class: str | None = None, config: dict | None = None, **overrides: Any
) -> nn.Module:
    """Returns a freshly initialised transformers model of `model_type` (config `config` with `overrides`), wrapped.

    Example:
        >>> model = revzoo.create("transformers/llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    """
    if model_type not in FAMILIES:
        raise revzoo.ConfigError(f"model_type must be one of {', '.join(sorted(FAMILIES))}, got {model_type!r}")
    settings = {key: value for key, value in {**(config or {}), **overrides}.items() if key != "model_type"}
    hf_config = transformers.AutoConfig.for_model(model_type, **settings)
    dtype = hf_config.dtype
    if not isinstance(dtype, torch.dtype):
        dtype = getattr(torch, str(dtype or "float32"))
    cls = _model_class(model_class, model_type)
    if cls.__name__.startswith("AutoModel"):
        model = cls.from_config(hf_config, dtype=dtype)
    else:
        model = cls._from_config(hf_config, dtype=dtype)
    return wrap(model, form=form)


def example_tokens(model: nn.Module, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns `((), {"input_ids": ...})`: two seeded rows of 16 token ids in the model's vocabulary."""
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=generator)
    return (), {"input_ids": ids.to(device)}
