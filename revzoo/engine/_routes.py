"""Argument routes: which keyword arguments reach `f`, `g`, or both, per block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["Branch", "RouteTable", "RoutesArg"]

Branch = Literal["f", "g", "both"]
RoutesArg = Mapping[str, Branch] | Sequence[Mapping[str, Branch]] | None

_BRANCHES: dict[str, tuple[bool, bool]] = {"f": (True, False), "g": (False, True), "both": (True, True)}


def _parse_route(name: str, value: Any, where: str) -> tuple[bool, bool]:
    if isinstance(value, str) and value in _BRANCHES:
        return _BRANCHES[value]
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, bool) for v in value):
        if not any(value):
            raise ValueError(f"route {name!r}{where} names neither f nor g; use 'f', 'g' or 'both'")
        return (value[0], value[1])
    raise ValueError(f"route {name!r}{where} is {value!r}; expected 'f', 'g' or 'both'")


class RouteTable:
    """Per-block routes, validated once at construction.

    `routes` is one mapping `{name: "f" | "g" | "both"}` for every block, or a sequence of
    such mappings, one per block. A keyword argument that no block routes is refused when
    the stack is called, rather than silently dropped.
    """

    def __init__(self, routes: RoutesArg, depth: int) -> None:
        if routes is None:
            routes = {}
        if isinstance(routes, Mapping):
            per_block = [routes] * depth
        elif isinstance(routes, Sequence) and not isinstance(routes, str):
            per_block = list(routes)
            if len(per_block) != depth:
                raise ValueError(f"routes has {len(per_block)} entries but the stack has {depth} blocks")
        else:
            raise TypeError(f"routes must be a mapping or a list of mappings, got {type(routes).__name__}")
        self.blocks: list[dict[str, tuple[bool, bool]]] = []
        for index, table in enumerate(per_block):
            if not isinstance(table, Mapping):
                raise TypeError(f"routes[{index}] must be a mapping, got {type(table).__name__}")
            where = f" of block {index}" if not isinstance(routes, Mapping) else ""
            self.blocks.append({name: _parse_route(name, value, where) for name, value in table.items()})
        self.names: frozenset[str] = frozenset(name for table in self.blocks for name in table)

    def check(self, kwargs: Mapping[str, Any]) -> None:
        """Raises TypeError for a keyword argument that no route names."""
        unknown = sorted(set(kwargs) - self.names)
        if unknown:
            known = ", ".join(sorted(self.names)) or "none"
            raise TypeError(f"keyword argument(s) {unknown} reach no block: the stack's routes name {known}")

    def split(self, index: int, kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[dict, dict]:
        """Returns the keyword arguments of `f` and of `g` in block `index`.

        Context fields go to both branches unless the routes name them.
        """
        table = self.blocks[index]
        f_kwargs: dict[str, Any] = {}
        g_kwargs: dict[str, Any] = {}
        for source in (context, kwargs):
            for name, value in source.items():
                to_f, to_g = table.get(name, (True, True) if source is context else (False, False))
                if to_f:
                    f_kwargs[name] = value
                if to_g:
                    g_kwargs[name] = value
        return f_kwargs, g_kwargs
