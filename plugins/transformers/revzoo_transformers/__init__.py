"""revzoo_transformers: Hugging Face transformers models made reversible in place (revzoo's "transformers" plugin).

`revzoo.reversibilize(model)` on a `transformers.PreTrainedModel` of a supported family keeps the
model's class, modules and state-dict keys: its layer list is replaced by one whose loop revzoo runs
(see `layers`), each pretrained layer becomes `F` of a block with a zero-initialised adapter as `G`
(MEFT's coupling), and `generate`, `save_pretrained`, `Trainer` and PEFT see the model they know.
Registers the "transformers" architecture (what `revzoo.save` / `revzoo.load` rebuild such a model
from) and the "transformers" adapter (what `reversibilize` finds for such a model).

transformers is imported on first use, not with the plugin, so `revzoo list` starts without it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import revzoo

from .families import FAMILIES, register_family

__all__ = ["FAMILIES", "register_adapters", "register_architectures", "register_family"]


def _is_transformers_model(model: Any) -> bool:
    transformers = sys.modules.get("transformers")  # a transformers model exists only once transformers is imported
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def _hub_config(config_json: Mapping[str, Any]) -> dict[str, Any] | None:
    """The revzoo config of a transformers `save_pretrained` directory of a supported family (its config.json)."""
    model_type = config_json.get("model_type")
    if model_type not in FAMILIES:
        return None
    classes = config_json.get("architectures") or [None]
    return {"model_type": model_type, "model_class": classes[0], "config": dict(config_json)}


def _build(**config: Any) -> Any:
    try:
        from .build import build
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "transformers":
            raise
        raise revzoo.PluginError(
            "the transformers plugin needs transformers, which is not installed: pip install 'revzoo[transformers]'"
        ) from err
    return build(**config)


def _example(model: Any, generator: Any) -> tuple[tuple, dict]:
    from .build import example_tokens

    return example_tokens(model, generator)


def _wrap(model: Any, form: str = "reversible") -> Any:
    from .convert import wrap

    return wrap(model, form=form)


@revzoo.hookimpl
def register_architectures(register) -> None:
    """Registers "transformers": a supported transformers model by model_type, e.g. transformers/llama."""
    register(revzoo.ArchSpec(
        name="transformers",
        builder=_build,
        description="a Hugging Face transformers model by model_type (llama, gpt2, bert, ...); kwargs set its config",
        defaults={"model_type": None, "model_class": None, "config": {}},
        forms=("sequential", "reversible"),
        routes={"calls": "f"},
        subname_key="model_type",
        open_config=True,
        example_inputs=_example,
        foreign_class=True,
        hub_config=_hub_config,
        card="model_card.md",
    ))


@revzoo.hookimpl
def register_adapters(register) -> None:
    """Registers the "transformers" adapter: a transformers model converted in place (it keeps its class)."""
    register(revzoo.Adapter(
        name="transformers",
        description="a transformers PreTrainedModel, converted in place to run its layers through revzoo",
        wrap=_wrap,
        accepts=_is_transformers_model,
    ))
