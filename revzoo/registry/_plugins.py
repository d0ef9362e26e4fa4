"""The plugin manager: entry points loaded once in a fixed order, each hook called once through pluggy.

Every plugin, built-in or third-party, arrives the same way: an entry point in the
`revzoo` group, or `register_plugin` at run time. A plugin that fails to import, or
raises while registering (any exception but the user's Ctrl-C, SystemExit included), is
reported once and left out; the rest load. For that, each hook implementation is guarded
when it is registered: a failing one records its error against its own plugin and returns
None, so one pluggy call per hook still runs every other implementation, wrappers and
tryfirst/trylast included. Precedence never depends on `sys.path`: built-in plugins come
first, then other entry points by name, then run-time plugins in the order registered; a
name already provided stays with its first provider.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pluggy

from ..errors import PluginError
from . import hookspecs
from ._entry_points import (
    PluginRecord,
    chosen_entry_points,
    describe,
    import_plugin,
    output_to_stderr,
    unknown_hooks,
    warn,
)
from ._spec import Adapter, ArchSpec, CheckpointFormat, Command

__all__ = [
    "PluginRecord",
    "Registry",
    "load_plugins",
    "loaded_registry",
    "plugin_manager",
    "plugin_records",
    "register_plugin",
    "unregister_plugin",
]

# hook -> (the kind its names are owned under, what its `register` takes)
_HOOKS: Final = {"register_architectures": ("arch", ArchSpec), "register_formats": ("format", CheckpointFormat),
                 "register_adapters": ("adapter", Adapter), "register_commands": ("command", Command)}
_WHAT: Final = {"arch": "model", "format": "format", "adapter": "adapter", "command": "command"}


@dataclass
class Registry:
    """Everything the loaded plugins registered, keyed by name, what failed, and what was shadowed."""

    architectures: dict[str, ArchSpec] = field(default_factory=dict)  # names and aliases
    formats: dict[str, CheckpointFormat] = field(default_factory=dict)
    adapters: dict[str, Adapter] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # ("arch", NAME), ("format", NAME), ... -> plugin
    failures: dict[str, str] = field(default_factory=dict)  # plugin -> one-line error, at import or registering
    shadowed: dict[str, list[str]] = field(default_factory=dict)  # plugin -> its names another plugin provides


class _Build:
    """One call of each hook: what each plugin registered through it, and the plugins that failed."""

    def __init__(self) -> None:
        self.found: defaultdict[str, list[tuple[str, Any]]] = defaultdict(list)  # plugin -> (kind, item)
        self.failed: dict[str, BaseException] = {}
        self.plugin: str | None = None  # whose implementation is running

    def register(self, hook_name: str, item: Any) -> None:
        """The `register` callback of `hook_name`: the item is the running implementation's plugin's."""
        kind, cls = _HOOKS[hook_name]
        if not isinstance(item, cls):
            raise PluginError(f"{hook_name} takes revzoo.{cls.__name__}, got {type(item).__name__}")
        if self.plugin is None:
            raise PluginError(f"the register of {hook_name} was called after the hook returned")
        self.found[self.plugin].append((kind, item))

    def run(self, plugin: str, step: Callable[[], Any]) -> Any:
        """Returns `step()`, run as `plugin`'s code; what it raises is recorded as the plugin's failure (then None).

        Ctrl-C ends the command; StopIteration is a wrapper's generator finishing, for the caller to read.
        """
        previous, self.plugin = self.plugin, plugin
        try:
            return step()
        except (KeyboardInterrupt, StopIteration):
            raise
        except BaseException as err:  # noqa: B036 -- a plugin's SystemExit must not end the user's command either
            self.failed.setdefault(plugin, err)
            return None
        finally:
            self.plugin = previous


def _guard(impl: pluggy.HookImpl, hook_name: str) -> None:
    """Replaces `impl.function` by one that fails alone, blaming its plugin, while a registry is being built."""
    function, plugin = impl.function, impl.plugin_name
    if hook_name not in _HOOKS:
        return  # a misspelt hook: refused when registered

    def call(*args: Any, **kwargs: Any) -> None:
        build = _state.build
        if build is None:
            return function(*args, **kwargs)
        if plugin in build.failed:
            return None  # left out of this build
        returned = build.run(plugin, lambda: function(*args, **kwargs))
        if returned is not None:  # what it returns would be dropped: nothing registered, silently
            kind, cls = _HOOKS[hook_name]
            build.failed.setdefault(plugin, PluginError(
                f"{hook_name} returned {type(returned).__name__} instead of None; call "
                f"register(revzoo.{cls.__name__}(...)) for each {kind} instead of returning them"))
        return None

    def wrap(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        build, inner = _state.build, function(*args, **kwargs)
        if build is None:
            return (yield from inner)
        try:
            if plugin not in build.failed:
                build.run(plugin, lambda: next(inner))  # the wrapper's code up to its yield
        except StopIteration:
            build.failed.setdefault(plugin, PluginError(f"its {hook_name} wrapper does not yield"))
        if plugin in build.failed:
            return (yield)  # left out: the implementations it wraps still run
        result = yield
        try:
            build.run(plugin, lambda: inner.send(result))
        except StopIteration as stop:
            return stop.value
        if plugin not in build.failed:
            inner.close()
            build.failed[plugin] = PluginError(f"its {hook_name} wrapper yields more than once")
        return result

    impl.function = wrap if impl.wrapper or impl.hookwrapper else call


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, guarding each hook implementation as it is registered (see `_guard`)."""

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        callers = self.get_hookcallers(plugin) if registered is not None else None
        for caller in callers or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    _guard(impl, caller.name)
        return registered


plugin_manager: Final = _PluginManager("revzoo")
plugin_manager.add_hookspecs(hookspecs)


@dataclass
class _LoadState:
    loaded: bool = False
    autoload: bool = True
    order: list[str] = field(default_factory=list)  # registered plugin names in precedence order
    plugins: dict[str, PluginRecord] = field(default_factory=dict)  # entry-point plugins tried, by name
    registry: Registry | None = None
    build: _Build | None = None  # the hook calls under way


_state = _LoadState()


def plugin_records() -> dict[str, PluginRecord]:
    """Returns the entry-point plugins tried, by name in precedence order: their distributions, how loading went."""
    return dict(_state.plugins)


def _register(plugin: Any, name: str | None) -> str:
    """Registers with pluggy and checks for misspelt hooks; leaves nothing registered when it raises."""
    registered = plugin_manager.register(plugin, name=name)
    if registered is None:
        raise PluginError(f"plugin {name or plugin!r} is blocked")
    try:
        plugin_manager.check_pending()
    except pluggy.PluginValidationError as err:
        message = unknown_hooks(plugin_manager, plugin)
        plugin_manager.unregister(name=registered)
        raise PluginError(message) from err
    return registered


def load_plugins() -> None:
    """Loads the `revzoo` entry points once, honouring REVZOO_LOAD_PLUGINS / REVZOO_DISABLE_PLUGINS."""
    if _state.loaded or not _state.autoload:
        return
    _state.loaded = True
    for entry_point, left_out_by in chosen_entry_points():
        name = entry_point.name
        if left_out_by is not None:
            _state.plugins[name] = PluginRecord.of(entry_point, status="skipped", error=left_out_by)
            continue
        if plugin_manager.has_plugin(name):
            continue
        record = _state.plugins[name] = PluginRecord.of(entry_point)
        try:
            _register(import_plugin(entry_point), name)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: B036 -- a plugin's SystemExit must not end the user's command either
            _state.plugins[name] = record.failed(err)
            continue
        _state.order.append(name)
    _state.registry = None


def _claims(kind: str, item: Any) -> list[tuple[str, str]]:
    return [(kind, name) for name in (item.name, *getattr(item, "aliases", ()))]


def _merge(registry: Registry, plugin_name: str, items: list[tuple[str, Any]], strict: bool) -> None:
    """Adds one plugin's registrations; an item whose name is taken is left out with a warning (raises if `strict`)."""
    tables = {"arch": registry.architectures, "format": registry.formats, "adapter": registry.adapters,
              "command": registry.commands}
    for kind, item in items:
        keys = _claims(kind, item)
        taken = [key for key in keys if key in registry.owners]
        if taken:
            name, owner = taken[0][1], registry.owners[taken[0]]
            if strict:
                raise PluginError(f"{_WHAT[kind]} name {name!r} is registered by both "
                                  f"plugin {owner!r} and plugin {plugin_name!r}")
            registry.shadowed.setdefault(plugin_name, []).append(name)
            who = "itself" if owner == plugin_name else f"plugin {owner!r}"
            warn(f"plugin {plugin_name!r} registers {_WHAT[kind]} {name!r}, which {who} already provides; "
                 f"{_WHAT[kind]} {item.name!r} of plugin {plugin_name!r} is left out")
            continue
        for key in keys:
            registry.owners[key] = plugin_name
            tables[kind][key[1]] = item


def _ordered_plugins() -> Iterator[str]:
    """Yields the registered plugins' names in precedence order (ones registered around revzoo's back last)."""
    named = dict(plugin_manager.list_name_plugin())
    for name in [*_state.order, *sorted(set(named) - set(_state.order))]:
        if named.get(name) is not None:
            yield name


def _build(strict: str | None = None) -> Registry:
    """Calls each hook once through pluggy, then merges what each plugin registered in precedence order.

    A plugin that fails in one hook is left out of the later ones and loses what it registered;
    when it is `strict`, its error is raised instead.
    """
    build, outer = _Build(), _state.build  # outer: a hook that asked for the registry while it ran
    _state.build = build
    try:
        with output_to_stderr():
            for hook_name in _HOOKS:
                getattr(plugin_manager.hook, hook_name)(register=functools.partial(build.register, hook_name))
    finally:
        _state.build = outer
    if strict in build.failed:
        raise build.failed[strict]
    failures = {name: record.error for name, record in _state.plugins.items() if record.status == "failed"}
    registry = Registry(failures=failures)
    for name, err in build.failed.items():
        registry.failures[name] = describe(err)
        warn(f"plugin {name!r} failed to register: {describe(err)}")
    for name in _ordered_plugins():
        if name not in build.failed:
            _merge(registry, name, build.found[name], strict=name == strict)
    return registry


def loaded_registry() -> Registry:
    """Returns the registry, loading plugins and collecting their hooks on first use."""
    if _state.registry is None:
        load_plugins()
        _state.registry = _build()
    return _state.registry


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
        raise PluginError(f"plugin {name!r} failed to register: {describe(err)}") from err
    return name


def unregister_plugin(name: str) -> None:
    """Removes a plugin registered by name; raises KeyError for a name not registered."""
    if not plugin_manager.has_plugin(name):
        raise KeyError(f"no plugin named {name!r}; registered: {sorted(n for n, _ in plugin_manager.list_name_plugin())}")
    plugin_manager.unregister(name=name)
    if name in _state.order:
        _state.order.remove(name)
    _state.registry = None
