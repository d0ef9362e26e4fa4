"""What a keyword may be under "invert": what its recompute in backward can see again as the forward saw it.

The recompute calls each branch again with the call's keyword data. Tensors are saved by the
block's Function; immutable values cannot change; lists and dicts of them are rebuilt around the
saved tensors, but only if the forward left their structure as it found it. Any other object
(a KV cache, a counter, a plain list a branch appends to) may be changed by the forward, so the
recompute would silently compute something else: such keywords are refused before any work,
and a list or dict whose structure a block changes is refused at that block.
"""

from __future__ import annotations

import enum
import functools
import types
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["KeywordStructure", "refuse_mutable_keywords"]

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.memory_format,
              torch.layout, torch.Generator, enum.Enum, types.FunctionType, types.BuiltinFunctionType,
              types.MethodType, functools.partial, range, slice, type)  # Generator: its state is restored


def _unsupported(value: Any) -> type | None:
    """Returns the type of the first value inside `value` that is neither a tensor, an immutable value nor a
    tuple, list or dict of them; None if there is none."""
    if isinstance(value, (torch.Tensor, *_IMMUTABLE)):
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list, frozenset)):
        return next((found for item in value if (found := _unsupported(item)) is not None), None)
    return type(value)


def refuse_mutable_keywords(kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Raises TypeError naming the first keyword the recompute could not see again as the forward saw it."""
    for name, value in {**context, **kwargs}.items():
        found = _unsupported(value)
        if found is not None:
            what = f"is a {found.__name__}" if found is type(value) else f"holds a {found.__name__}"
            raise TypeError(
                f"revzoo: keyword {name!r} {what}; under execution='invert' a keyword must be a tensor, an "
                "immutable value, or a tuple, list or dict of them (a branch may change this object in forward, "
                "and the recompute in backward would see it changed). Leave it out of training calls "
                "(transformers: use_cache=False) or use execution='autograd'"
            )


def _structure(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", id(value), tuple((key, _structure(item)) for key, item in value.items()))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, id(value), tuple(_structure(item) for item in value))
    return id(value)


class KeywordStructure:
    """The lists and dicts of one call's keyword data, as the call found them: checked after each block."""

    def __init__(self, kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        self.values = {**context, **kwargs}
        self.found = {name: _structure(value) for name, value in self.values.items() if isinstance(value, (list, dict))}

    def check(self, where: str) -> None:
        """Raises RuntimeError if the blocks run so far (`where`, e.g. "block 3") changed a list or dict keyword."""
        for name, structure in self.found.items():
            if _structure(self.values[name]) != structure:
                raise RuntimeError(
                    f"revzoo: {where} changed keyword {name!r} (a {type(self.values[name]).__name__}) in its "
                    "forward; execution='invert' recomputes each block in backward and would see it changed. "
                    "Do not change keyword containers in a branch, or use execution='autograd'"
                )
