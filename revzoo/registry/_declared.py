"""Declarations that cannot drift: every stack of a built model must route and lay out data as its ArchSpec says."""

from __future__ import annotations

from torch import nn

from ..engine import ReversibleSequence
from ..engine._routes import RouteTable
from ..errors import PluginError
from ._spec import ArchSpec

__all__ = ["check_declarations"]

_NAMES = {(True, False): "f", (False, True): "g", (True, True): "both"}


def _shown(route: tuple[bool, bool] | None) -> str:
    return "nowhere" if route is None else repr(_NAMES[route])


def check_declarations(spec: ArchSpec, model: nn.Module, plugin: str) -> None:
    """Raises PluginError unless every ReversibleSequence in `model` has exactly `spec.routes` and `spec.layout`.

    Costs one walk over the model's modules; `create` runs it on every model it builds, so
    what `revzoo info` shows is what every model of the architecture does.
    """
    try:
        declared = RouteTable(dict(spec.routes), 1).blocks[0]
    except (TypeError, ValueError) as err:
        raise PluginError(f"plugin {plugin!r}: model {spec.name!r} declares bad routes: {err}") from err
    for stack_name, stack in model.named_modules():
        if not isinstance(stack, ReversibleSequence):
            continue
        where = f"plugin {plugin!r}: model {spec.name!r}, stack {stack_name or '(the model)'!r}"
        if stack.layout != spec.layout:
            raise PluginError(
                f"{where} has stream layout {stack.layout!r} but the ArchSpec declares {spec.layout!r}; "
                "declare the layout the builder uses"
            )
        for index, table in enumerate(stack.routes.blocks):
            for key in sorted(set(table) | set(declared)):
                if table.get(key) != declared.get(key):
                    raise PluginError(
                        f"{where}, block {index} routes {key!r} to {_shown(table.get(key))} but the ArchSpec "
                        f"declares {_shown(declared.get(key))}; declare the routes the builder uses"
                    )
