"""The plugin manager: entry points loaded one by one, hooks collected into one registry.

Every plugin, built-in or third-party, arrives the same way: an entry point in the
`revzoo` group, or `register_plugin` at run time. A plugin that fails to import, or
raises or conflicts while registering, is reported once and left out; the rest load.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Final

import pluggy

from ..errors import PluginError
from . import hookspecs
from ._spec import Adapter, ArchSpec, CheckpointFormat

__all__ = ["Registry", "load_plugins", "loaded_registry", "plugin_manager", "register_plugin", "unregister_plugin"]

ENTRY_POINT_GROUP: Final = "revzoo"

plugin_manager: Final = pluggy.PluginManager("revzoo")
plugin_manager.add_hookspecs(hookspecs)


@dataclass
class Registry:
    """Everything the loaded plugins registered, keyed by name, and what failed."""

    architectures: dict[str, ArchSpec] = field(default_factory=dict)  # names and aliases
    formats: dict[str, CheckpointFormat] = field(default_factory=dict)
    adapters: dict[str, Adapter] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # "arch:NAME" / "format:NAME" / "adapter:NAME" -> plugin
    failures: dict[str, str] = field(default_factory=dict)  # plugin name -> one-line error


@dataclass
class _LoadState:
    attempted: set[str] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)
    import_failures: dict[str, str] = field(default_factory=dict)
    registry: Registry | None = None


_state: Final = _LoadState()


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def load_plugins() -> None:
    """Loads the `revzoo` entry points not yet tried, honouring REVZOO_LOAD_PLUGINS / REVZOO_DISABLE_PLUGINS."""
    only = _env_names("REVZOO_LOAD_PLUGINS")
    blocked = _env_names("REVZOO_DISABLE_PLUGINS") or set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if name in _state.attempted or (only is not None and name not in only) or name in blocked:
            continue
        _state.attempted.add(name)
        if entry_point.dist is not None:
            _state.versions[name] = entry_point.dist.version
            _state.distributions[name] = entry_point.dist.name
        try:
            plugin_manager.register(entry_point.load(), name=name)
        except Exception as err:  # a broken plugin must not take the others down
            _state.import_failures[name] = _describe(err)
            warnings.warn(f"revzoo plugin {name!r} failed to load: {_describe(err)}", stacklevel=2)
        _state.registry = None


_HOOKS: Final = {"register_architectures": ("arch", ArchSpec), "register_formats": ("format", CheckpointFormat),
                 "register_adapters": ("adapter", Adapter)}


def _collect_plugin(plugin: Any) -> list[tuple[str, Any]]:
    """Returns `(kind, item)` for everything one plugin registers through its hooks."""
    found: list[tuple[str, Any]] = []
    for hook_name, (kind, cls) in _HOOKS.items():
        for impl in getattr(plugin_manager.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue

            def register(item: Any, kind: str = kind, cls: type = cls, hook_name: str = hook_name) -> None:
                if not isinstance(item, cls):
                    raise PluginError(f"{hook_name} takes revzoo.{cls.__name__}, got {type(item).__name__}")
                found.append((kind, item))

            impl.function(register=register)
    return found


def _merge(registry: Registry, plugin_name: str, items: list[tuple[str, Any]]) -> None:
    """Adds one plugin's registrations, or none of them if any name is taken."""
    claims = [(f"{kind}:{name}", item) for kind, item in items
              for name in (item.name, *getattr(item, "aliases", ()))]
    seen: set[str] = set()
    for key, _ in claims:
        owner = registry.owners.get(key) or (plugin_name if key in seen else None)
        if owner is not None:
            kind, name = key.split(":", 1)
            raise PluginError(
                f"{'model' if kind == 'arch' else kind} name {name!r} is registered by both "
                f"plugin {owner!r} and plugin {plugin_name!r}"
            )
        seen.add(key)
    tables = {"arch": registry.architectures, "format": registry.formats, "adapter": registry.adapters}
    for key, item in claims:
        registry.owners[key] = plugin_name
        kind, name = key.split(":", 1)
        tables[kind][name] = item


def _build(strict: str | None = None) -> Registry:
    registry = Registry(failures=dict(_state.import_failures))
    for name, plugin in plugin_manager.list_name_plugin():
        try:
            _merge(registry, name, _collect_plugin(plugin))
        except Exception as err:
            if name == strict:
                raise
            registry.failures[name] = _describe(err)
            warnings.warn(f"revzoo plugin {name!r} failed to register: {_describe(err)}", stacklevel=3)
    return registry


def loaded_registry() -> Registry:
    """Returns the registry, loading plugins and collecting their hooks on first use."""
    load_plugins()
    if _state.registry is None:
        _state.registry = _build()
    return _state.registry


def plugin_version(name: str) -> str | None:
    """Returns the distribution version of an entry-point plugin, if known."""
    return _state.versions.get(name)


def plugin_distribution(name: str) -> str | None:
    """Returns the name of the distribution (what `pip install` takes) that provides an entry-point plugin, if known."""
    return _state.distributions.get(name)


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Registers a module or object with `@revzoo.hookimpl` functions; returns its name.

    Raises PluginError, leaving nothing registered, when its hooks are malformed, raise,
    or claim a name another plugin already holds.
    """
    load_plugins()
    try:
        name = plugin_manager.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as err:
        raise PluginError(f"cannot register plugin {name or plugin!r}: {_describe(err)}") from err
    if name is None:
        raise PluginError(f"plugin {plugin!r} is blocked or already registered")
    try:
        _state.registry = _build(strict=name)
    except Exception as err:
        plugin_manager.unregister(name=name)
        _state.registry = None
        raise PluginError(f"plugin {name!r} failed to register: {_describe(err)}") from err
    return name


def unregister_plugin(name: str) -> None:
    """Removes a plugin registered by name; raises KeyError for a name not registered."""
    if not plugin_manager.has_plugin(name):
        raise KeyError(f"no plugin named {name!r}; registered: {sorted(n for n, _ in plugin_manager.list_name_plugin())}")
    plugin_manager.unregister(name=name)
    _state.registry = None
