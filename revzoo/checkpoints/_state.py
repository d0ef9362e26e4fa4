"""Fitting a set of named tensors into a model: checked in full before anything is copied."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ._io import progress_bar

__all__ = ["TensorSource", "check_fit", "stored_values", "chosen_dtype", "fit_tensors", "name_listing", "tied_groups"]

_SHOWN = 3


@dataclass(frozen=True)
class TensorSource:
    """Named tensors whose shapes and dtypes are known before their data is read."""

    shapes: Mapping[str, tuple[int, ...]]
    dtypes: Mapping[str, torch.dtype]
    get: Callable[[str], torch.Tensor]
    stored: int | None = None  # values the file really stores, where views (stride 0, shared storage) hold fewer

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> TensorSource:
        return cls({k: tuple(v.shape) for k, v in tensors.items()}, {k: v.dtype for k, v in tensors.items()},
                   tensors.__getitem__, stored_values(tensors.values()))


def stored_values(tensors: Iterable[torch.Tensor]) -> int:
    """Returns how many values the storages behind `tensors` hold, each storage once: what a file of them stores.

    A tensor's own `numel()` is no measure of a file's cost: an expanded view (stride 0) of one value, saved
    by torch.save, claims any shape in a few bytes.
    """
    storages: dict[tuple[int, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes() // max(tensor.element_size(), 1)
    return sum(storages.values())


_MODEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def chosen_dtype(dtype: torch.dtype | str | None, source: TensorSource) -> torch.dtype | None:
    """Returns the floating dtype to give a loaded model, or None to keep the one it was built in.

    "auto" is the file's: the dtype most of its floating-point numbers have (None when it has
    none, or when that is not one a model computes in, such as a float8).
    """
    if dtype == "auto":
        counts: Counter[torch.dtype] = Counter()
        for name, stored in source.dtypes.items():
            if stored.is_floating_point:
                counts[stored] += math.prod(source.shapes[name])
        common = max(counts, key=counts.__getitem__) if counts else None
        return common if common in _MODEL_DTYPES else None
    chosen = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if dtype is not None and chosen not in _MODEL_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in _MODEL_DTYPES)
        raise ConfigError(f"dtype {dtype!r} is not one to load a model in; use 'auto' (the file's), None, or {names}")
    return chosen


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Returns the model's state-dict names grouped by the tensor they name (tied weights share a group)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return list(groups.values())


def _kind(dtype: torch.dtype) -> int:
    if dtype == torch.bool:
        return 0
    if dtype.is_complex:
        return 3
    return 2 if dtype.is_floating_point else 1


def name_listing(label: str, items: list[str]) -> str:
    """Returns `N label [first few, ... (k more)]`: long lists stay one readable line."""
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"{len(items)} {label} [{', '.join(items[:_SHOWN])}{more}]"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def check_fit(
    model: nn.Module, source: TensorSource, origin: str, aliases: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Returns `(model name, source name)` pairs to copy, or raises CheckpointError naming every misfit.

    Every tied group of the model must find exactly one tensor (under any of its names, or
    through `aliases`, the file's record of names it stored once); every tensor of the
    source must belong to the model; shapes must match; dtypes must fit (float into an
    integer buffer, say, is refused).
    """
    aliases = dict(aliases or {})
    targets = model.state_dict(keep_vars=True)
    plan: list[tuple[str, str]] = []  # (model name, source name)
    used: set[str] = set()
    missing, wrong_shape, wrong_dtype = [], [], []
    for group in tied_groups(model):
        found = [n for n in group if n in source.shapes] or [aliases[n] for n in group if aliases.get(n) in source.shapes]
        if not found:
            missing.append(f"{group[0]} {_shape(tuple(targets[group[0]].shape))}")
            continue
        used.update(n for n in group if n in source.shapes)
        used.update(found)
        name, target = found[0], targets[group[0]]
        if source.shapes[name] != tuple(target.shape):
            wrong_shape.append(f"{name}: file {_shape(source.shapes[name])} vs model {_shape(tuple(target.shape))}")
        elif _kind(source.dtypes[name]) > _kind(target.dtype):
            wrong_dtype.append(f"{name}: file {source.dtypes[name]} into model {target.dtype}")
        else:
            plan.append((group[0], name))
    unexpected = [f"{k} {_shape(source.shapes[k])}" for k in sorted(set(source.shapes) - used)]
    problems = [
        name_listing(label, sorted(items))
        for label, items in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", wrong_shape),
                             ("of a dtype the model cannot hold", wrong_dtype))
        if items
    ]
    if problems:
        raise CheckpointError(f"{origin}: tensors do not fit the model: " + "; ".join(problems))
    return plan


def fit_tensors(model: nn.Module, source: TensorSource, origin: str, aliases: Mapping[str, str] | None = None) -> None:
    """Copies `source` into `model`'s parameters and buffers, tensor by tensor, after `check_fit` passed."""
    plan = check_fit(model, source, origin, aliases)
    targets = model.state_dict(keep_vars=True)
    total = sum(targets[name].numel() * targets[name].element_size() for name, _ in plan)
    with torch.no_grad(), progress_bar(total, f"loading {origin}") as bar:
        for target_name, source_name in plan:
            target = targets[target_name]
            target.copy_(source.get(source_name))
            bar.update(target.numel() * target.element_size())
