"""wrap: a transformers model, in place, into one whose layer loop revzoo runs (the "transformers" adapter)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

import revzoo

from .families import find_layers
from .layers import LoopState, ReversibleLayers, build_stack

__all__ = ["STACK_NAME", "stack_of", "wrap"]

STACK_NAME = "revzoo_stack"  # the stack's attribute on the layer list's parent: keys revzoo_stack.blocks.N.adapter.*


def stack_of(model: nn.Module) -> revzoo.ReversibleSequence | None:
    """Returns the stack `wrap` put inside `model`, or None."""
    for module in model.modules():
        if isinstance(module, ReversibleLayers):
            return module.stack
    return None


def _accepts_use_cache(module: nn.Module) -> bool:
    return "use_cache" in inspect.signature(module.forward).parameters


def _guard(stack: revzoo.ReversibleSequence, owner: nn.Module):
    """A forward pre-hook of the module running the layer loop: what the reversible form cannot run, said at once."""
    takes_use_cache = _accepts_use_cache(owner)
    warned: set[str] = set()  # each warning once per model

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if stack.form != "reversible":
            return None
        config = getattr(module, "config", None)
        for name in ("output_hidden_states", "output_attentions"):
            if kwargs.get(name, getattr(config, name, False)):
                raise ValueError(
                    f"revzoo: {name} is not available in the reversible form (its layers run inside one reversible "
                    "stack, so per-layer outputs are not the model's hidden states); set "
                    "revzoo.set_form(model, 'sequential') to read them"
                )
        if not (torch.is_grad_enabled() and stack.execution == "invert"):
            return None
        if "checkpointing" not in warned and any(getattr(b.f.layer, "gradient_checkpointing", False) for b in stack.blocks):
            disable = "activation_checkpointing_disable" if hasattr(module, "activation_checkpointing_disable") \
                else "gradient_checkpointing_disable"  # transformers 5 renamed it; the old name warns
            warnings.warn(
                "revzoo: gradient checkpointing is enabled on a model in the reversible form; the invert execution "
                "already keeps memory flat in depth, and checkpointing inside it only recomputes each layer once "
                f"more (gradients unchanged). Call model.{disable}()",
                UserWarning,
                stacklevel=3,
            )
            warned.add("checkpointing")
        if not takes_use_cache:
            return None
        if kwargs.get("use_cache") is False or kwargs.get("cache") is not None:
            return None  # an explicit cache under invert is refused by the engine, naming the keyword
        use_cache = kwargs.get("use_cache")
        if (getattr(config, "use_cache", False) if use_cache is None else use_cache) and "use_cache" not in warned:
            warnings.warn(
                "revzoo: use_cache=True is incompatible with training through the invert execution (each layer "
                "is recomputed in backward, which would append to the cache again); setting use_cache=False",
                UserWarning,
                stacklevel=3,
            )
            warned.add("use_cache")
        return args, {**kwargs, "use_cache": False}

    return hook


def wrap(model: nn.Module, form: str = "reversible") -> nn.Module:
    """Converts `model` (a transformers PreTrainedModel) in place so that revzoo runs its layer loop; returns it.

    The model keeps its class, its modules and its state-dict keys; one `revzoo.ReversibleSequence`
    (no parameters of its own until `revzoo.reversibilize` adds adapters) runs the layers in `form`.
    The sequential form runs the model's own loop, so it computes the pretrained function bitwise.
    """
    if stack_of(model) is not None:
        raise revzoo.ConfigError(f"this {type(model).__name__} already runs its layers through revzoo")
    name, parent, layers = find_layers(model)
    if getattr(model.config, "layerdrop", 0.0) or getattr(model.config, "encoder_layerdrop", 0.0):
        raise revzoo.ConfigError("revzoo cannot convert a model with layerdrop > 0 (it skips layers at random)")
    if getattr(model.config, "add_cross_attention", False):
        raise revzoo.ConfigError("revzoo cannot convert a model with cross-attention (encoder hidden states per layer)")
    stack = build_stack(list(layers))
    stack.form = form
    state = LoopState()
    setattr(parent, name.rpartition(".")[2], ReversibleLayers(list(layers), stack, state))
    setattr(parent, STACK_NAME, stack)
    parent.register_forward_pre_hook(state.enter, with_kwargs=True)  # first: `leave` runs even if the guard raises
    parent.register_forward_pre_hook(_guard(stack, parent), with_kwargs=True)
    parent.register_forward_hook(state.leave, with_kwargs=True, always_call=True)
    model.revzoo_architecture = "transformers"
    model.revzoo_config = config_of(model)
    return model


def config_of(model: nn.Module) -> dict[str, Any]:
    """Returns what rebuilds `model` without its weights: its class and its transformers config (revzoo.save
    records the coupling and adapters beside it)."""
    return {"model_class": type(model).__name__, "model_type": model.config.model_type, "config": model.config.to_dict()}
