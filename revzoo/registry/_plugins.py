"""The plugin manager: entry points loaded one by one in a fixed order, hooks called through pluggy plugin by plugin.

Every plugin, built-in or third-party, arrives the same way: an entry point in the
`revzoo` group, or `register_plugin` at run time. A plugin that fails to import, or
raises while registering (any exception but the user's Ctrl-C, SystemExit included), is
reported once and left out; the rest load. Precedence never depends on `sys.path`:
built-in plugins come first, then other entry points by name, then run-time plugins in
the order registered; a name already provided stays with its first provider.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pluggy

from ..errors import PluginError, PluginWarning
from . import hookspecs
from ._spec import Adapter, ArchSpec, CheckpointFormat, Command

__all__ = [
    "Registry",
    "load_plugins",
    "loaded_registry",
    "missing_extra",
    "plugin_manager",
    "plugin_version",
    "register_plugin",
    "unregister_plugin",
]

ENTRY_POINT_GROUP: Final = "revzoo"
BUILTIN_DISTRIBUTION: Final = "revzoo"
ENVIRONMENT: Final = ("REVZOO_LOAD_PLUGINS", "REVZOO_DISABLE_PLUGINS")
SLOW_IMPORT_SECONDS = 10.0  # after this, an import still running is named with the way to skip it

plugin_manager: Final = pluggy.PluginManager("revzoo")
plugin_manager.add_hookspecs(hookspecs)


@dataclass
class Registry:
    """Everything the loaded plugins registered, keyed by name, what failed, and what was shadowed."""

    architectures: dict[str, ArchSpec] = field(default_factory=dict)  # names and aliases
    formats: dict[str, CheckpointFormat] = field(default_factory=dict)
    adapters: dict[str, Adapter] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # ("arch", NAME), ("format", NAME), ... -> plugin
    failures: dict[str, str] = field(default_factory=dict)  # plugin name -> one-line error
    unavailable: dict[str, str] = field(default_factory=dict)  # plugin -> the optional dependency to install
    skipped: dict[str, str] = field(default_factory=dict)  # plugin -> the environment variable that left it out
    shadowed: dict[str, list[str]] = field(default_factory=dict)  # plugin -> its names another plugin provides


@dataclass
class _LoadState:
    loaded: bool = False
    autoload: bool = True
    order: list[str] = field(default_factory=list)  # registered plugin names in precedence order
    builtins: set[str] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)
    import_failures: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)  # entry-point plugin -> what `pip install` takes
    requirements: dict[str, list[str]] = field(default_factory=dict)  # entry-point plugin -> its distribution's
    registry: Registry | None = None


_state = _LoadState()


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_extra(plugin: str, err: BaseException) -> str | None:
    """Returns "needs MODULE: pip install 'DIST[EXTRA]'" when `err` is a missing module that an extra of the plugin's
    distribution provides, else None.

    A plugin whose optional dependency is not installed (the vit plugin without timm) is not
    a failure to warn about on every command; what needs it says what to install.
    """
    if not isinstance(err, ModuleNotFoundError) or not err.name or plugin not in _state.distributions:
        return None
    module = err.name.partition(".")[0]
    for requirement in _state.requirements.get(plugin, ()):
        match = re.match(r"\s*([A-Za-z0-9._-]+)[^;]*;.*extra\s*==\s*[\"']([^\"']+)[\"']", requirement)
        if match and _normalise(match.group(1)) == _normalise(module):
            return f"needs {module}: pip install '{_state.distributions[plugin]}[{match.group(2)}]'"
    return None


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=4)


def _is_builtin(entry_point: importlib.metadata.EntryPoint) -> bool:
    dist = entry_point.dist
    return dist is not None and dist.name.lower().replace("_", "-") == BUILTIN_DISTRIBUTION


def _provider(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f"distribution {dist.name} {dist.version}" if dist is not None else f"entry point {entry_point.value}"


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Returns the `revzoo` entry points in precedence order, one per name: built-ins first, then by name.

    Another distribution's entry point with a taken name (a built-in's above all) is left
    out with a warning, so which plugin a name means never depends on `sys.path` order.
    """
    found = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                   key=lambda ep: (not _is_builtin(ep), ep.name, _provider(ep)))
    chosen: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in found:
        first = chosen.setdefault(entry_point.name, entry_point)
        if first is not entry_point:
            kind = "the built-in plugin" if _is_builtin(first) else "plugin"
            _warn(f"plugin {entry_point.name!r} of {_provider(entry_point)} is not loaded: {kind} "
                  f"{entry_point.name!r} of {_provider(first)} has that name (rename the entry point)")
    return list(chosen.values())


def _env_names(variable: str, installed: set[str]) -> set[str] | None:
    """Returns the comma-separated names in `variable` (None when unset), warning about names no entry point has.

    Both variables read alike: an empty value (or only commas) is an empty list, so
    REVZOO_LOAD_PLUGINS="" loads no plugin and REVZOO_DISABLE_PLUGINS="" disables none.
    """
    value = os.environ.get(variable)
    if value is None:
        return None
    names = {name.strip() for name in value.split(",") if name.strip()}
    for name in sorted(names - installed):
        close = difflib.get_close_matches(name, sorted(installed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _warn(f"{variable} names {name!r}, which no installed plugin has{hint} "
              f"(installed: {', '.join(sorted(installed)) or 'none'}; separate names with commas)")
    return names


def _output_to_stderr() -> contextlib.AbstractContextManager:
    """What a plugin prints while it imports or registers goes to stderr: stdout carries the command's output
    (`revzoo plugins` and `list --json` print JSON there)."""
    return contextlib.redirect_stdout(sys.stderr) if sys.stderr is not None else contextlib.nullcontext()


def _import(entry_point: importlib.metadata.EntryPoint) -> Any:
    """Imports an entry point; past SLOW_IMPORT_SECONDS, names it and the way to skip it on stderr."""
    skip = f"REVZOO_DISABLE_PLUGINS={entry_point.name}"

    def say_slow() -> None:
        sys.stderr.write(f"revzoo: plugin {entry_point.name!r} is still importing after {SLOW_IMPORT_SECONDS:g} s; "
                         f"if it hangs, press Ctrl-C and run with {skip} to skip it\n")
        sys.stderr.flush()

    timer = threading.Timer(SLOW_IMPORT_SECONDS, say_slow)
    timer.daemon = True
    timer.start()
    try:
        with _output_to_stderr():
            return entry_point.load()
    except KeyboardInterrupt:
        sys.stderr.write(f"revzoo: interrupted while importing plugin {entry_point.name!r}; run with {skip} to skip it\n")
        raise
    finally:
        timer.cancel()


def _unknown_hooks(plugin: Any) -> str:
    """Returns one line naming the plugin's hook implementations that match no revzoo hook."""
    known = sorted(name for name in vars(hookspecs) if name.startswith("register_"))
    unknown = sorted(caller.name for caller in plugin_manager.get_hookcallers(plugin) or [] if not caller.has_spec())
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown hook {', '.join(parts)}; revzoo's hooks are {', '.join(known)}"


def _register(plugin: Any, name: str | None) -> str:
    """Registers with pluggy and checks for misspelt hooks; leaves nothing registered when it raises."""
    registered = plugin_manager.register(plugin, name=name)
    if registered is None:
        raise PluginError(f"plugin {name or plugin!r} is blocked")
    try:
        plugin_manager.check_pending()
    except pluggy.PluginValidationError as err:
        message = _unknown_hooks(plugin)
        plugin_manager.unregister(name=registered)
        raise PluginError(message) from err
    return registered


def load_plugins() -> None:
    """Loads the `revzoo` entry points once, honouring REVZOO_LOAD_PLUGINS / REVZOO_DISABLE_PLUGINS."""
    if _state.loaded or not _state.autoload:
        return
    _state.loaded = True
    entry_points = _entry_points()
    installed = {entry_point.name for entry_point in entry_points}
    only, blocked = (_env_names(variable, installed) for variable in ENVIRONMENT)
    for entry_point in entry_points:
        name = entry_point.name
        if (only is not None and name not in only) or name in (blocked or ()):
            if name in (blocked or ()):  # named to be left out (an allow-list leaves out what it does not name)
                _state.skipped[name] = ENVIRONMENT[1]
            continue
        if plugin_manager.has_plugin(name):
            continue
        if entry_point.dist is not None:
            _state.versions[name] = entry_point.dist.version
            _state.distributions[name] = entry_point.dist.name
            _state.requirements[name] = list(entry_point.dist.requires or ())
        if _is_builtin(entry_point):
            _state.builtins.add(name)
        try:
            _register(_import(entry_point), name)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: B036 -- a plugin's SystemExit must not end the user's command either
            missing = missing_extra(name, err)
            if missing is not None:
                _state.unavailable[name] = missing
            else:
                _state.import_failures[name] = _describe(err)
                _warn(f"plugin {name!r} failed to load: {_describe(err)}")
            continue
        _state.order.append(name)
    _state.registry = None


_HOOKS: Final = {"register_architectures": ("arch", ArchSpec), "register_formats": ("format", CheckpointFormat),
                 "register_adapters": ("adapter", Adapter), "register_commands": ("command", Command)}
_WHAT: Final = {"arch": "model", "format": "format", "adapter": "adapter", "command": "command"}


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def _call(hook_name: str, plugin: Any, left_out: set[str]) -> list[Any]:
    """Returns what one plugin registers through one hook, called through pluggy.

    Only this plugin's implementation runs, with every other plugin's wrappers around it
    (those in `left_out` excepted), so wrappers and hook-call monitoring see every call.
    """
    kind, cls = _HOOKS[hook_name]
    others = [impl.plugin for impl in getattr(plugin_manager.hook, hook_name).get_hookimpls()
              if impl.plugin is not plugin and (not _is_wrapper(impl) or impl.plugin_name in left_out)]
    found: list[Any] = []

    def register(item: Any) -> None:
        if not isinstance(item, cls):
            raise PluginError(f"{hook_name} takes revzoo.{cls.__name__}, got {type(item).__name__}")
        found.append(item)

    with _output_to_stderr():
        returned = plugin_manager.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
    if returned:  # pluggy collects what implementations return (None left out): items returned are lost
        raise PluginError(f"{hook_name} returned {type(returned[0]).__name__} instead of None; call "
                          f"register(revzoo.{cls.__name__}(...)) for each {kind} instead of returning them")
    return found


def _wrapper_at_fault(err: BaseException, plugin: Any) -> str | None:
    """Returns the name of another plugin whose wrapper raised `err`, if the innermost plugin frame is one."""
    codes = {}
    for hook_name in _HOOKS:
        for impl in getattr(plugin_manager.hook, hook_name).get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                codes[code] = impl
    culprit = None
    traceback = err.__traceback__
    while traceback is not None:
        impl = codes.get(traceback.tb_frame.f_code)
        if impl is not None:
            culprit = impl
        traceback = traceback.tb_next
    return culprit.plugin_name if culprit is not None and culprit.plugin is not plugin else None


def _claims(kind: str, item: Any) -> list[tuple[str, str]]:
    return [(kind, name) for name in (item.name, *getattr(item, "aliases", ()))]


def _merge(registry: Registry, plugin_name: str, items: list[tuple[str, Any]], strict: bool) -> None:
    """Adds one plugin's registrations; an item whose name is taken is left out with a warning (raises if `strict`)."""
    tables = {"arch": registry.architectures, "format": registry.formats, "adapter": registry.adapters,
              "command": registry.commands}
    if strict:
        seen: set[tuple[str, str]] = set()
        for kind, item in items:
            for key in _claims(kind, item):
                owner = registry.owners.get(key) or (plugin_name if key in seen else None)
                if owner is not None:
                    raise PluginError(f"{_WHAT[kind]} name {key[1]!r} is registered by both "
                                      f"plugin {owner!r} and plugin {plugin_name!r}")
                seen.add(key)
    for kind, item in items:
        keys = _claims(kind, item)
        taken = [key for key in keys if key in registry.owners]
        if taken:
            name, owner = taken[0][1], registry.owners[taken[0]]
            registry.shadowed.setdefault(plugin_name, []).append(name)
            who = "itself" if owner == plugin_name else f"plugin {owner!r}"
            _warn(f"plugin {plugin_name!r} registers {_WHAT[kind]} {name!r}, which {who} already provides; "
                  f"{_WHAT[kind]} {item.name!r} of plugin {plugin_name!r} is left out")
            continue
        for key in keys:
            registry.owners[key] = plugin_name
            tables[kind][key[1]] = item


def _ordered_plugins() -> Iterator[tuple[str, Any]]:
    """Yields the registered plugins in precedence order (ones registered around revzoo's back last)."""
    named = dict(plugin_manager.list_name_plugin())
    for name in [*_state.order, *sorted(set(named) - set(_state.order))]:
        if named.get(name) is not None:
            yield name, named[name]


def _build(strict: str | None = None) -> Registry:
    """Calls every plugin's hooks in pluggy's order (tryfirst/trylast apply), then merges them in precedence order."""
    registry = Registry(failures=dict(_state.import_failures), unavailable=dict(_state.unavailable),
                        skipped=dict(_state.skipped))
    plugins = dict(_ordered_plugins())
    found: dict[str, list[tuple[str, Any]]] = {name: [] for name in plugins}
    left_out: set[str] = set()
    for hook_name, (kind, _) in _HOOKS.items():
        for impl in reversed(getattr(plugin_manager.hook, hook_name).get_hookimpls()):  # pluggy's call order
            name = impl.plugin_name
            while name in plugins and name not in left_out and not _is_wrapper(impl):
                try:
                    found[name] += [(kind, item) for item in _call(hook_name, impl.plugin, left_out)]
                    break
                except KeyboardInterrupt:
                    raise
                except BaseException as err:  # noqa: B036 -- isolated like a failed import
                    culprit = _wrapper_at_fault(err, impl.plugin) or name
                    if culprit == strict:
                        raise
                    left_out.add(culprit)
                    registry.failures[culprit] = _describe(err)
                    _warn(f"plugin {culprit!r} failed to register: {_describe(err)}")
                    # when another plugin's wrapper failed, this plugin's hook runs again without it
    for name in plugins:
        if name not in left_out:
            _merge(registry, name, found[name], strict=name == strict)
    return registry


def loaded_registry() -> Registry:
    """Returns the registry, loading plugins and collecting their hooks on first use."""
    if _state.registry is None:
        load_plugins()
        _state.registry = _build()
    return _state.registry


def plugin_version(name: str) -> str | None:
    """Returns the distribution version of an entry-point plugin, if known."""
    return _state.versions.get(name)


def plugin_distribution(name: str) -> str | None:
    """Returns the name of the distribution (what `pip install` takes) that provides an entry-point plugin, if known."""
    return _state.distributions.get(name)
def is_builtin(name: str) -> bool:
    """Returns whether the plugin named `name` is one of revzoo's own (loaded from the revzoo distribution)."""
    return name in _state.builtins


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Registers a module or object with `@revzoo.hookimpl` functions; returns its name.

    It comes after every plugin loaded so far. Raises PluginError, leaving nothing
    registered, when its hooks are malformed or misspelt, raise, or claim a name another
    plugin already provides.
    """
    load_plugins()
    try:
        name = _register(plugin, name)
    except (ValueError, pluggy.PluginValidationError) as err:
        raise PluginError(f"cannot register plugin {name or plugin!r}: {err}") from err
    _state.order.append(name)
    try:
        _state.registry = _build(strict=name)
    except BaseException as err:
        unregister_plugin(name)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin {name!r} failed to register: {_describe(err)}") from err
    return name


def unregister_plugin(name: str) -> None:
    """Removes a plugin registered by name; raises KeyError for a name not registered."""
    if not plugin_manager.has_plugin(name):
        raise KeyError(f"no plugin named {name!r}; registered: {sorted(n for n, _ in plugin_manager.list_name_plugin())}")
    plugin_manager.unregister(name=name)
    if name in _state.order:
        _state.order.remove(name)
    _state.registry = None
