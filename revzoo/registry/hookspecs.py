"""The hooks a revzoo plugin implements. Both run once, when plugins are first needed."""

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
