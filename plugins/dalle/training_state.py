"""Optimizer, scheduler and epoch saved beside a model without pickle: tensors in safetensors, the rest as JSON.

Optimizer state is keyed by parameter *name*, not by the optimizer's index, so it loads
into an optimizer built over the same parameters in another order (DALLE-pytorch's
optimizer over upstream's modules, say).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import revzoo

__all__ = ["import_dalle_pytorch_training_state", "load_training_state", "save_training_state", "training_state_dict"]

_KEY = "revzoo.training"


def _fail(message: str) -> None:
    raise revzoo.CheckpointError(message)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError as err:
        raise revzoo.CheckpointError(f"{what} holds a value JSON cannot hold ({err}); it cannot be saved without pickle") \
            from err


def training_state_dict(
    named: Mapping[int, str], optimizer_state: Mapping[str, Any], scheduler_state: Any = None, epoch: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Returns (tensors, metadata) for an optimizer state dict whose parameter indices `named` maps to names."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        name = named[int(index)]
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{**{k: v for k, v in group.items() if k != "params"}, "params": [named[int(i)] for i in group["params"]]}
              for group in optimizer_state["param_groups"]]
    metadata = {f"{_KEY}.param_groups": _json(groups, "the optimizer's param_groups"),
                f"{_KEY}.scalars": _json(scalars, "the optimizer's state"),
                f"{_KEY}.scheduler": _json(scheduler_state, "the scheduler's state"),
                f"{_KEY}.epoch": str(int(epoch))}
    return tensors, metadata


def _names(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    by_identity = {id(parameter): name for name, parameter in model.named_parameters(remove_duplicate=False)}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    unknown = [index for index, p in enumerate(params) if id(p) not in by_identity]
    if unknown:
        _fail(f"the optimizer holds {len(unknown)} parameter(s) that are not the model's; build it over model.parameters()")
    return {index: by_identity[id(p)] for index, p in enumerate(params)}


def save_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None, epoch: int = 0) -> Path:
    """Writes the optimizer's (and scheduler's) state and the epoch to a safetensors file, atomically; returns it."""
    tensors, metadata = training_state_dict(
        _names(model, optimizer), optimizer.state_dict(), None if scheduler is None else scheduler.state_dict(), epoch)
    return _write(path, tensors, metadata)


def import_dalle_pytorch_training_state(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Writes the `opt_state`, `scheduler_state` and `epoch` of a DALLE-pytorch checkpoint as a training-state file.

    Load it with `load_training_state` into an optimizer over the imported model's trainable
    parameters (in any order): the next step is the one DALLE-pytorch would take on resuming.
    """
    from .checkpoint import config_from_checkpoint, upstream_parameter_names

    obj = revzoo.read_foreign(src)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("opt_state"), Mapping):
        _fail(f"{src}: no opt_state; DALLE-pytorch saves the optimizer only in train_dalle.py checkpoints")
    _, form = config_from_checkpoint(obj)
    count = sum(len(group["params"]) for group in obj["opt_state"]["param_groups"])
    names = upstream_parameter_names(obj["weights"], form, count)
    tensors, metadata = training_state_dict(dict(enumerate(names)), obj["opt_state"], obj.get("scheduler_state"),
                                            int(obj.get("epoch") or 0))
    return _write(dst, tensors, metadata)


def _write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None) -> int:
    """Loads a saved state into `optimizer` (and `scheduler`) built over `model`'s parameters; returns the epoch."""
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        if f"{_KEY}.param_groups" not in metadata:
            _fail(f"{path}: not a revzoo training-state file (no {_KEY} metadata)")
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    groups = json.loads(metadata[f"{_KEY}.param_groups"])
    scalars = json.loads(metadata[f"{_KEY}.scalars"])
    index = {name: i for i, name in _names(model, optimizer).items()}
    saved_names = [name for group in groups for name in group["params"]]
    if sorted(saved_names) != sorted(index):
        missing, extra = sorted(set(index) - set(saved_names)), sorted(set(saved_names) - set(index))
        _fail(f"{path}: the saved optimizer is over other parameters (missing {missing[:3]}, extra {extra[:3]})")
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        name, _, entry = key.rpartition("/")
        state.setdefault(index[name], {})[entry] = tensor
    for name, entries in scalars.items():
        state.setdefault(index[name], {}).update(entries)
    # load_state_dict pairs the saved indices with the optimizer's parameters in order: list them in that order
    optimizer.load_state_dict({"state": state, "param_groups": [
        {**group, "params": sorted(index[name] for name in group["params"])} for group in groups]})
    scheduler_state = json.loads(metadata[f"{_KEY}.scheduler"])
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return int(metadata[f"{_KEY}.epoch"])
