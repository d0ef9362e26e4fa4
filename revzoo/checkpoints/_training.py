"""Training-state files: an optimizer's and scheduler's state and the epoch beside a model, without pickle.

Tensors (Adam's `exp_avg`, `step`, ...) are stored under "PARAMETER/ENTRY"; everything else
(hyperparameters, entries that are not tensors, the scheduler's state, the epoch) is JSON in
the metadata. The file beside `NAME.safetensors` is `NAME.training.safetensors`:
`import_checkpoint` writes it there and `export_checkpoint` reads it from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import TrainingState
from ._io import check_output, open_safetensors, save_safetensors
from ._write import atomic_write

__all__ = ["carried_training_state", "drop_stale_training_state", "load_training_state", "read_training_state",
           "refuse_input_as_training_state", "save_training_state", "training_state_beside", "training_state_file"]

_KEY = "revzoo.training."
_FIELDS = ("param_groups", "entries", "scheduler", "epoch")


def training_state_beside(model_path: str | os.PathLike) -> Path:
    """Where the training state of the model at `model_path` lives: NAME.training.safetensors beside it (NAME
    shortened, with a digest, when the model's name leaves no room for the suffix)."""
    path = Path(model_path)
    if path.is_dir():
        return path / "training.safetensors"
    name = path.name.removesuffix(".index.json").removesuffix(".safetensors")
    suffix = ".training.safetensors"
    stored = os.fsencode(name)  # the bytes the file system holds (a name need not be valid UTF-8)
    if len(stored) + len(suffix) > 255:  # a model name the file system takes, whose state's name it would not
        digest = hashlib.sha256(stored).hexdigest()[:16]
        name = stored[: 255 - len(suffix) - len(digest) - 1].decode(errors="ignore") + "~" + digest
    return path.with_name(f"{name}{suffix}")


def refuse_input_as_training_state(src: str | os.PathLike, state_path: str | os.PathLike) -> None:
    """Refuses an output whose training state would be the input file (`convert x.training.safetensors
    x.safetensors`): replacing or removing that file would delete the input."""
    state = Path(state_path)
    if state.exists() and Path(src).exists() and os.path.samefile(src, state):
        raise CheckpointError(f"{src}: is the input, and also where the output's training state goes ({state}); "
                              "name the output otherwise")


def carried_training_state(src: Path, dst: str | os.PathLike, overwrite: bool) -> dict[Path, Callable[[Path], None]]:
    """The copy of the training state beside `src` to write beside `dst`, as a writer for `write_checkpoint`'s
    `beside` (none when `src` has none or both are one file); that path is vetted as an output first."""
    source, target = training_state_beside(src), training_state_beside(dst)
    refuse_input_as_training_state(src, target)
    check_output(source, target, overwrite)
    if not source.is_file() or source.resolve() == target.resolve():
        return {}
    return {target: lambda tmp: shutil.copyfile(source, tmp)}


def drop_stale_training_state(src: Path, dst: str | os.PathLike) -> None:
    """Removes the training state beside `dst` when `src`, which `dst` was just written from, has none: it belonged
    to the model replaced, and must not be paired with this one."""
    if not training_state_beside(src).is_file():
        training_state_beside(dst).unlink(missing_ok=True)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what} holds a value JSON cannot hold ({err}); it cannot be saved without pickle") \
            from err


def training_state_file(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata that store `state` (raises CheckpointError before anything is written)."""
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, state_entries in state.optimizer["state"].items():
        for key, value in state_entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                entries.setdefault(name, {})[key] = value
    metadata = {_KEY + "param_groups": _json(list(state.optimizer["param_groups"]), "the optimizer's param_groups"),
                _KEY + "entries": _json(entries, "the optimizer's state"),
                _KEY + "scheduler": _json(state.scheduler, "the scheduler's state"),
                _KEY + "epoch": str(state.epoch)}
    return tensors, metadata


def save_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None, epoch: int = 0) -> Path:
    """Writes the optimizer's (and scheduler's) state and the epoch, keyed by `model`'s parameter names, atomically.

    Example:
        >>> revzoo.save(model, "dalle.safetensors")
        >>> revzoo.save_training_state("dalle.training.safetensors", model, optimizer, scheduler, epoch=3)
    """
    tensors, metadata = training_state_file(TrainingState.of(model, optimizer, scheduler, epoch))
    return atomic_write(path, lambda tmp: save_safetensors(tensors, tmp, metadata))


def read_training_state(path: str | os.PathLike) -> TrainingState:
    """Reads a training-state file, checked: a corrupt or foreign file is a CheckpointError naming it."""
    with open_safetensors(path) as file:
        metadata = file.metadata() or {}
        if not all(_KEY + field in metadata for field in _FIELDS):
            raise CheckpointError(f"{path}: not a revzoo training-state file (no {_KEY}* metadata)")
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    try:
        groups, entries, scheduler = (json.loads(metadata[_KEY + field]) for field in _FIELDS[:3])
        epoch = int(metadata[_KEY + "epoch"])
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt training-state metadata ({err})") from err
    if not isinstance(entries, dict) or not all(isinstance(value, dict) for value in entries.values()):
        raise CheckpointError(f"{path}: corrupt training-state metadata: entries must map names to objects")
    state: dict[str, dict[str, Any]] = {name: dict(values) for name, values in entries.items()}
    for key, tensor in tensors.items():
        name, _, entry = key.rpartition("/")
        if not name:
            raise CheckpointError(f"{path}: tensor {key!r:.80} is not named PARAMETER/ENTRY")
        state.setdefault(name, {})[entry] = tensor
    try:
        return TrainingState({"state": state, "param_groups": groups}, scheduler, epoch)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err


def load_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None) -> int:
    """Loads a saved state into `optimizer` (built over `model`'s parameters, in any order) and `scheduler`.

    Returns the epoch. The next step is the one the saved optimizer would have taken.
    """
    state = read_training_state(path)
    try:
        return state.load_into(model, optimizer, scheduler)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
