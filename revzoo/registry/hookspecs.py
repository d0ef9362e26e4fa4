"""The hooks a revzoo plugin implements. Each is called once, through pluggy, whenever the registry is built: when
plugins are first needed (by the registry, or by the command line when it builds its parser) and again after
`register_plugin` or `unregister_plugin`; it registers through the `register` callback it is given."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("revzoo")
hookimpl = pluggy.HookimplMarker("revzoo")


@hookspec
def register_architectures(register: Callable) -> None:
    """Register architectures: call `register(revzoo.ArchSpec(...))` once per architecture; return None."""


@hookspec
def register_formats(register: Callable) -> None:
    """Register foreign checkpoint formats: call `register(revzoo.CheckpointFormat(...))`; return None."""


@hookspec
def register_adapters(register: Callable) -> None:
    """Register adapters of foreign model instances: call `register(revzoo.Adapter(...))`; return None."""


@hookspec
def register_commands(register: Callable) -> None:
    """Register `revzoo` sub-commands (llm's hook, for argparse): call `register(revzoo.Command(name, help, run,
    configure))` once per command; return None.

    Runs with the other hooks; the command line then calls `configure(parser)` to add the command's arguments and,
    when the command is chosen, `run(args)`. A command whose name revzoo's own commands or an earlier plugin
    already use is left out with a warning.
    """
