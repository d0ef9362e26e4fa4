"""Which transformers model families revzoo runs reversibly, and where each keeps its layer list."""

from __future__ import annotations

from torch import nn

import revzoo

__all__ = ["FAMILIES", "find_layers", "register_family"]

# model_type (config.model_type) -> the name of the layer list, found anywhere inside the model
FAMILIES: dict[str, str] = {
    "bert": "encoder.layer",
    "gemma2": "layers",
    "gemma3_text": "layers",
    "gpt2": "h",
    "gpt_neox": "layers",
    "llama": "layers",
    "mistral": "layers",
    "opt": "decoder.layers",
    "phi3": "layers",
    "qwen2": "layers",
    "qwen3": "layers",
    "roberta": "encoder.layer",
}


def register_family(model_type: str, layers: str) -> None:
    """Lets revzoo convert models whose `config.model_type` is `model_type`; `layers` names their layer list.

    The family's layers must take the hidden states first and return the new hidden states (as every
    transformers 5 layer does), and the model must pass them on unchanged between layers.

    Example:
        >>> register_family("qwen3_moe", "layers")
    """
    if not isinstance(model_type, str) or not model_type or not isinstance(layers, str) or not layers:
        raise revzoo.ConfigError("register_family takes a model_type and the name of its layer list, both strings")
    FAMILIES[model_type] = layers


def find_layers(model: nn.Module) -> tuple[str, nn.Module, nn.ModuleList]:
    """Returns the layer list's qualified name, its parent module and the list itself."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise revzoo.ConfigError(
            f"revzoo cannot convert {type(model).__name__} (model_type {model_type!r}); supported families: "
            f"{', '.join(sorted(FAMILIES))} (a plugin adds one with revzoo_transformers.register_family)"
        )
    suffix = FAMILIES[model_type]
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and (name == suffix or name.endswith("." + suffix))]
    if len(found) != 1:
        raise revzoo.ConfigError(
            f"expected one layer list {suffix!r} in {type(model).__name__}, found {[name for name, _ in found]}"
        )
    name, layers = found[0]
    parent = model.get_submodule(name.rpartition(".")[0])
    return name, parent, layers
