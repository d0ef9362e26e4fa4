"""A Hugging Face Hub model directory: config.json, model.safetensors or its shards and index, README.md.

`revzoo.load(DIR)` reads one through `pretrained_files`; `save_pretrained` (in _hub) writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..registry import loaded_registry

__all__ = ["CARD_NAME", "CONFIG_NAME", "INDEX_NAME", "WEIGHTS_NAME", "pretrained_files"]

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
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        raise CheckpointError(f"{path}: not JSON ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str) or not isinstance(
        config.get("config"), dict
    ):
        claimed = _claimed(config) if isinstance(config, dict) else None
        if claimed is not None:
            return claimed
        raise CheckpointError(
            f"{path}: not a revzoo config (it needs \"architecture\": NAME and \"config\": {{...}}); "
            "a timm or transformers repository is loaded by that library"
        )
    return config


def _claimed(config_json: dict[str, Any]) -> dict[str, Any] | None:
    """Returns revzoo's config for another library's directory that a registered architecture recognises
    (`ArchSpec.hub_config`, e.g. the transformers plugin's), in the sequential form: its own function."""
    for spec in {id(spec): spec for spec in loaded_registry().architectures.values()}.values():
        if spec.hub_config is not None:
            config = spec.hub_config(config_json)
            if config is not None:
                return {"architecture": spec.name, "config": config, "form": "sequential"}
    return None


def pretrained_files(directory: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Returns the weights to load from a Hub-layout directory (the index when sharded) and its config.json.

    Raises CheckpointError if the directory is neither a revzoo model directory nor one a registered
    architecture recognises (`ArchSpec.hub_config`).
    """
    directory = Path(directory)
    config = _read_config(directory)
    weights = directory / INDEX_NAME if (directory / INDEX_NAME).is_file() else directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME} beside {CONFIG_NAME}")
    return weights, config
