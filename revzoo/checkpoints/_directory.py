"""Reading a Hugging Face Hub model directory: config.json, then model.safetensors or its shards and index.

`revzoo.load(DIR)` comes here; `save_pretrained` (in _hub) writes such directories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import create, resolve
from ._shards import open_tensors
from ._state import fit_tensors

__all__ = ["CARD_NAME", "CONFIG_NAME", "INDEX_NAME", "WEIGHTS_NAME", "load_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
CARD_NAME = "README.md"


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME}; revzoo.save_pretrained writes model directories")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not JSON ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str) or not isinstance(
        config.get("config"), dict
    ):
        raise CheckpointError(
            f"{path}: not a revzoo config (it needs \"architecture\": NAME and \"config\": {{...}}); "
            "a timm or transformers repository is loaded by that library"
        )
    return config


def load_pretrained(
    directory: str | os.PathLike,
    form: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Rebuilds the model of a Hub-layout directory from its config.json and loads its weights (single or sharded)."""
    directory = Path(directory)
    config = _read_config(directory)
    weights = directory / INDEX_NAME if (directory / INDEX_NAME).is_file() else directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME} beside {CONFIG_NAME}")
    with open_tensors(weights) as (raw, source):
        stored = raw.get("revzoo.architecture")
        if stored is not None and resolve(stored)[0].name != resolve(config["architecture"])[0].name:
            raise CheckpointError(f"{weights}: holds a {stored!r} model, but {CONFIG_NAME} says {config['architecture']!r}")
        model = create(config["architecture"], form=form or config.get("form"), **config["config"])
        fit_tensors(model, source, str(weights), json.loads(raw.get("revzoo.aliases", "{}")))
    return model.to(device=device, dtype=dtype)
