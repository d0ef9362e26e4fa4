"""The `revzoo` entry points: found in precedence order, chosen by the environment, imported, and recorded.

Each plugin tried gets one PluginRecord, read once from its distribution: what `pip install`
takes, its version, its requirements (for the extra a missing module belongs to), whether it
is a built-in, and what became of it.
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
from dataclasses import dataclass, replace
from typing import Any, Final

import pluggy

from ..errors import PluginWarning
from . import hookspecs

__all__ = ["PluginRecord", "chosen_entry_points", "describe", "import_plugin", "output_to_stderr", "unknown_hooks",
           "warn"]

ENTRY_POINT_GROUP: Final = "revzoo"
BUILTIN_DISTRIBUTION: Final = "revzoo"
ENVIRONMENT: Final = ("REVZOO_LOAD_PLUGINS", "REVZOO_DISABLE_PLUGINS")
SLOW_IMPORT_SECONDS = 10.0  # after this, an import still running is named with the way to skip it


def describe(err: BaseException) -> str:
    """Returns `Type: first line of the message`, how a plugin's failure is shown."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=4)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_builtin(entry_point: importlib.metadata.EntryPoint) -> bool:
    dist = entry_point.dist
    return dist is not None and _normalise(dist.name) == BUILTIN_DISTRIBUTION


@dataclass(frozen=True)
class PluginRecord:
    """An entry-point plugin tried: where it comes from, read once from its distribution, and what became of it."""

    name: str
    distribution: str | None = None  # what `pip install` takes; None for an entry point without a distribution
    version: str | None = None
    requires: tuple[str, ...] = ()
    builtin: bool = False
    status: str = "ok"  # "ok", "failed" (to import), "unavailable" (an extra is missing), "skipped" (the environment)
    error: str | None = None  # the one-line error, what to install, or the variable that left it out

    @classmethod
    def of(cls, entry_point: importlib.metadata.EntryPoint, **fields: Any) -> PluginRecord:
        dist = entry_point.dist
        if dist is None:
            return cls(entry_point.name, **fields)
        return cls(entry_point.name, dist.name, dist.version, tuple(dist.requires or ()), _is_builtin(entry_point),
                   **fields)

    def missing_extra(self, err: BaseException) -> str | None:
        """Returns "needs MODULE: pip install 'DIST[EXTRA]'" when `err` is a missing module that an extra of the
        distribution provides, else None.

        A plugin whose optional dependency is not installed (the vit plugin without timm) is not
        a failure to warn about on every command; what needs it says what to install.
        """
        if not isinstance(err, ModuleNotFoundError) or not err.name or self.distribution is None:
            return None
        module = err.name.partition(".")[0]
        for requirement in self.requires:
            match = re.match(r"\s*([A-Za-z0-9._-]+)[^;]*;.*extra\s*==\s*[\"']([^\"']+)[\"']", requirement)
            if match and _normalise(match.group(1)) == _normalise(module):
                return f"needs {module}: pip install '{self.distribution}[{match.group(2)}]'"
        return None

    def failed(self, err: BaseException) -> PluginRecord:
        """Returns this record for a plugin that did not load: unavailable for a missing extra, else failed (warned)."""
        missing = self.missing_extra(err)
        if missing is not None:
            return replace(self, status="unavailable", error=missing)
        warn(f"plugin {self.name!r} failed to load: {describe(err)}")
        return replace(self, status="failed", error=describe(err))


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
            warn(f"plugin {entry_point.name!r} of {_provider(entry_point)} is not loaded: {kind} "
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
        warn(f"{variable} names {name!r}, which no installed plugin has{hint} "
             f"(installed: {', '.join(sorted(installed)) or 'none'}; separate names with commas)")
    return names


def chosen_entry_points() -> Iterator[tuple[importlib.metadata.EntryPoint, str | None]]:
    """Yields `(entry point, None)` for each to load, in precedence order, and `(entry point, variable)` for each
    that REVZOO_DISABLE_PLUGINS names; those a REVZOO_LOAD_PLUGINS list does not name are left out unmentioned."""
    entry_points = _entry_points()
    installed = {entry_point.name for entry_point in entry_points}
    only, blocked = (_env_names(variable, installed) for variable in ENVIRONMENT)
    for entry_point in entry_points:
        if entry_point.name in (blocked or ()):
            yield entry_point, ENVIRONMENT[1]
        elif only is None or entry_point.name in only:
            yield entry_point, None


def output_to_stderr() -> contextlib.AbstractContextManager:
    """What a plugin prints while it imports or registers goes to stderr: stdout carries the command's output
    (`revzoo plugins` and `list --json` print JSON there)."""
    return contextlib.redirect_stdout(sys.stderr) if sys.stderr is not None else contextlib.nullcontext()


def import_plugin(entry_point: importlib.metadata.EntryPoint) -> Any:
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
        with output_to_stderr():
            return entry_point.load()
    except KeyboardInterrupt:
        sys.stderr.write(f"revzoo: interrupted while importing plugin {entry_point.name!r}; run with {skip} to skip it\n")
        raise
    finally:
        timer.cancel()


def unknown_hooks(manager: pluggy.PluginManager, plugin: Any) -> str:
    """Returns one line naming the plugin's hook implementations that match no revzoo hook."""
    known = sorted(name for name in vars(hookspecs) if name.startswith("register_"))
    unknown = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [] if not caller.has_spec())
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown hook {', '.join(parts)}; revzoo's hooks are {', '.join(known)}"
