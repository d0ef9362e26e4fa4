"""The tensors and generators inside a call's keyword data, found through lists, tuples and dicts.

A routed keyword may be a list of masks or a dict of biases; each tensor inside must become an
input of the block's Function, or its gradient is silently lost. Backward rebuilds the same
structure around fresh leaves. A container holding no tensor is passed on as the same object,
so caches and other state a branch keeps in a dict still reach the recompute unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["generators_in", "tensors_in", "with_tensors"]


def _children(value: Any) -> list[Any] | None:
    """Returns the items of a container this module looks into, or None for anything else."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (tuple, list)):
        return list(value)
    return None


def _leaves(value: Any) -> Iterator[Any]:
    children = _children(value)
    if children is None:
        yield value
        return
    for child in children:
        yield from _leaves(child)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Returns every tensor inside `value`, depth first, in a fixed order."""
    return [leaf for leaf in _leaves(value) if isinstance(leaf, torch.Tensor)]


def generators_in(value: Any) -> list[torch.Generator]:
    """Returns every `torch.Generator` inside `value`, each once."""
    found = {id(leaf): leaf for leaf in _leaves(value) if isinstance(leaf, torch.Generator)}
    return list(found.values())


def _rebuild(value: Any, items: list[Any]) -> Any:
    if isinstance(value, dict):
        rebuilt = dict(zip(value.keys(), items))
        return rebuilt if type(value) is dict else type(value)(rebuilt)
    if hasattr(value, "_fields"):  # a namedtuple takes its fields as arguments
        return type(value)(*items)
    return type(value)(items)


def with_tensors(value: Any, tensors: Iterator[torch.Tensor]) -> Any:
    """Returns `value` with its tensors replaced, in `tensors_in` order, by the next items of `tensors`."""
    if isinstance(value, torch.Tensor):
        return next(tensors)
    children = _children(value)
    if children is None or not tensors_in(value):
        return value
    return _rebuild(value, [with_tensors(child, tensors) for child in children])
