"""Stream layouts: which part of the data flowing through a stack is the reversible stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StreamLayout"]


@dataclass(frozen=True)
class StreamLayout:
    """Declares the reversible stream among context carried alongside it.

    The data is a tuple whose elements are named by `fields` in order, or, when `fields`
    is None, a dict. Only `stream` goes through the coupling; the other elements are
    passed to `f` and `g` as keyword arguments and come out of the stack unchanged.

    Example:
        >>> layout = StreamLayout(stream="values", fields=("coords", "values", "mask", "edges"))
    """

    stream: str
    fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.fields is not None:
            if len(set(self.fields)) != len(self.fields):
                raise ValueError(f"StreamLayout fields {self.fields!r} repeat a name")
            if self.stream not in self.fields:
                raise ValueError(f"StreamLayout stream {self.stream!r} is not one of its fields {self.fields!r}")

    def split(self, data: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Returns `(stream, context)` from the data a stack was called with."""
        if self.fields is None:
            if not isinstance(data, Mapping):
                raise TypeError(f"this stack's layout expects a dict with key {self.stream!r}, got {type(data).__name__}")
            items = dict(data)
        else:
            if not isinstance(data, (tuple, list)) or len(data) != len(self.fields):
                raise TypeError(
                    f"this stack's layout expects a tuple of {len(self.fields)} {self.fields!r}, "
                    f"got {type(data).__name__}" + (f" of {len(data)}" if isinstance(data, (tuple, list)) else "")
                )
            items = dict(zip(self.fields, data))
        if self.stream not in items:
            raise TypeError(f"the data has no stream {self.stream!r}; it has {sorted(items)!r}")
        stream = items.pop(self.stream)
        if not isinstance(stream, torch.Tensor):
            raise TypeError(f"the stream {self.stream!r} must be a tensor, got {type(stream).__name__}")
        return stream, items

    def join(self, data: Any, stream: torch.Tensor) -> Any:
        """Returns `data` with its stream replaced, in the same structure."""
        if self.fields is None:
            return {**data, self.stream: stream}
        index = self.fields.index(self.stream)
        items = (*data[:index], stream, *data[index + 1 :])
        return type(data)(*items) if hasattr(data, "_fields") else type(data)(items)  # a namedtuple takes fields
