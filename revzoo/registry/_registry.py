"""create / list_models: timm-style access to what the plugins registered, and the name prefixes `create` resolves.

A name such as `hf-hub:ORG/NAME` is not a registered architecture: its prefix has a resolver,
registered by a higher layer (the checkpoints register `hf-hub:` when revzoo.checkpoints is
imported, as `revzoo.create` does), so the registry never imports what resolves it.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from torch import nn

from ..engine import ZooModel
from ..errors import ConfigError, PluginError, UnknownFormatError, UnknownModelError, UnknownOptionError
from ._declared import check_declarations
from ._plugins import PluginRecord, loaded_registry, plugin_manager, plugin_records
from ._spec import ArchSpec, CheckpointFormat

__all__ = [
    "create",
    "default_form",
    "get_architecture",
    "get_format",
    "list_formats",
    "list_models",
    "plugins_info",
    "provenance",
    "register_resolver",
    "resolve",
    "unknown_name_error",
]

REV_SUFFIX = "-rev"
_RESOLVERS: Final[dict[str, Callable[..., nn.Module]]] = {}  # name prefix -> what builds the model the rest names


def register_resolver(prefix: str, resolver: Callable[..., nn.Module]) -> None:
    """Makes `create(PREFIX + REST, form=..., **options)` return `resolver(REST, form=..., **options)`.

    For names that are not registered architectures, such as the checkpoints' `hf-hub:ORG/NAME`.
    A prefix ends with ':' (no model name has one); registering it again replaces its resolver.
    """
    if not (isinstance(prefix, str) and prefix.endswith(":") and len(prefix) > 1 and callable(resolver)):
        raise TypeError(f"register_resolver takes a prefix ending in ':' and a function, got {prefix!r}, {resolver!r}")
    _RESOLVERS[prefix] = resolver


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()) -> list[str]:
    """Returns the registered model names matching the fnmatch pattern(s), naturally sorted.

    Each architecture is listed under its name (its default form) and, when it has a
    reversible form, under `NAME-rev`.

    Example:
        >>> revzoo.list_models("dalle*")
        ['dalle', 'dalle-rev']
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    names = set()
    for spec in loaded_registry().architectures.values():
        names.add(spec.name)
        if "reversible" in spec.forms and len(spec.forms) > 1:
            names.add(spec.name + REV_SUFFIX)
    chosen = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    chosen -= {n for n in chosen if any(fnmatch.fnmatchcase(n, p) for p in excludes)}
    return sorted(chosen, key=_natural_key)


def unknown_name_error(name: str, known: Iterable[str], what: str, error: type[KeyError], command: str) -> KeyError:
    """Returns `error` quoting `name`, the closest known names, the command that lists them, and plugins not loaded.

    A plugin left out for an optional dependency (the vit plugin without timm) is named with
    what to install, since the name asked for may be one of its.
    """
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    loaded_registry()
    records = sorted(plugin_records().values(), key=lambda record: record.name)
    absent = "".join(f"; plugin {record.name!r} is not loaded: it {record.error}"
                     for record in records if record.status == "unavailable")
    absent += "".join(f"; plugin {record.name!r} is not loaded: {record.error} leaves it out"
                      for record in records if record.status == "skipped")
    return error(f"unknown {what} {name!r}{hint} (see: revzoo {command}){absent}")


def resolve(name: str) -> tuple[ArchSpec, str | None, str | None]:
    """Returns `(spec, form implied by the name or None, sub-name or None)` for a model name."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    architectures = loaded_registry().architectures
    base, _, subname = name.partition("/")
    form = None
    if base not in architectures and base.endswith(REV_SUFFIX):
        base, form = base[: -len(REV_SUFFIX)], "reversible"
    spec = architectures.get(base)
    if spec is None or (subname and spec.subname_key is None):
        raise unknown_name_error(name, list_models(), "model", UnknownModelError, "list")
    return spec, form, subname or None


def default_form(spec: ArchSpec) -> str:
    """Returns the form of the bare name: sequential when it exists ("NAME-rev" is the reversible one)."""
    return "sequential" if "sequential" in spec.forms else spec.forms[0]


def get_architecture(name: str) -> ArchSpec:
    """Returns the ArchSpec registered under `name` (or an alias, or its `-rev` name)."""
    return resolve(name)[0]


def create(name: str, form: str | None = None, **overrides: Any) -> nn.Module:
    """Builds a registered model, or the model a prefixed name resolves to; keyword arguments override the defaults.

    A `-rev` name is the reversible form of the same architecture. Overrides that are
    None are dropped, so unset command-line options never replace a default. A name with a
    registered prefix goes to its resolver with `form` and the keyword arguments as given:
    `hf-hub:ORG/NAME[@REVISION]` is rebuilt from that Hub repository's config.json and weights
    (see `revzoo.checkpoints.load_from_hub`), taking `form`, `revision`, `cache_dir`, `device`
    and `dtype`, and no overrides.

    Example:
        >>> model = revzoo.create("dalle-rev", depth=2, dim=64)
        >>> revzoo.get_form(model)
        'reversible'
        >>> model = revzoo.create("hf-hub:my-org/vit-tiny-rev@main")
    """
    prefix = next((prefix for prefix in _RESOLVERS if isinstance(name, str) and name.startswith(prefix)), None)
    if prefix is not None:
        return _RESOLVERS[prefix](name[len(prefix):], form=form, **overrides)
    spec, implied_form, subname = resolve(name)
    if form is not None and implied_form is not None and form != implied_form:
        raise ConfigError(f"model {name!r} is the {implied_form} form; it cannot be created with form={form!r}")
    form = form or implied_form or default_form(spec)
    if form not in spec.forms:
        raise ConfigError(f"architecture {spec.name!r} has no {form!r} form; it supports {', '.join(spec.forms)}")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if subname is not None:
        overrides[spec.subname_key] = subname
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown and not spec.open_config:
        raise UnknownOptionError(
            f"{spec.name!r} got unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(spec.defaults))}"
        )
    config = {**spec.defaults, **overrides}
    owner = loaded_registry().owners.get(("arch", spec.name), "?")
    _check_builder_call(spec, owner, form, config)
    try:
        model = spec.builder(form=form, **config)
    except ModuleNotFoundError as err:  # an optional dependency of the plugin, imported when a model is built
        record = plugin_records().get(owner)
        needs = record.missing_extra(err) if record is not None else None
        if needs is None:
            raise
        raise PluginError(f"model {name!r} {needs}") from err
    if not isinstance(model, ZooModel) and not spec.foreign_class:
        raise PluginError(
            f"plugin {owner!r}: the builder of {spec.name!r} returned a {type(model).__name__}, not a revzoo.ZooModel; "
            "derive the model class from revzoo.ZooModel so that model.form and model.execution work"
        )
    check_declarations(spec, model, owner)
    model.revzoo_architecture = spec.name
    model.revzoo_config = config
    return model


def _check_builder_call(spec: ArchSpec, owner: str, form: str, config: dict[str, Any]) -> None:
    """Raises PluginError when the builder's signature cannot take the spec's defaults: the plugin's mistake, which
    would otherwise be a bare TypeError from inside `create`."""
    try:
        signature = inspect.signature(spec.builder)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    try:
        signature.bind(form=form, **config)
    except TypeError as err:
        raise PluginError(f"plugin {owner!r}: the builder of {spec.name!r} cannot be called with its defaults "
                          f"and the given options ({err}); add the missing defaults to its ArchSpec") from err


def list_formats() -> list[str]:
    """Returns the names of the registered foreign checkpoint formats, sorted."""
    return sorted(loaded_registry().formats)


def get_format(name: str) -> CheckpointFormat:
    """Returns the CheckpointFormat registered under `name`."""
    formats = loaded_registry().formats
    if name not in formats:
        raise unknown_name_error(name, formats, "checkpoint format", UnknownFormatError, "plugins")
    return formats[name]


def provenance(name: str) -> dict[str, Any]:
    """Returns where an architecture comes from: its plugin, the distribution providing it and that
    distribution's version (None when registered at run time), and its file schema version."""
    spec = resolve(name)[0]
    plugin = loaded_registry().owners.get(("arch", spec.name))
    record = plugin_records().get(plugin or "") or PluginRecord(plugin or "")
    return {"plugin": plugin, "distribution": record.distribution, "plugin_version": record.version,
            "schema": spec.schema}


def plugins_info() -> list[dict[str, Any]]:
    """Returns one record per plugin tried: name, version, built-in, hooks, what it provides, shadowed names, status, error.

    `shadowed` lists the names the plugin registers that an earlier plugin provides (built-ins
    first, then entry points by name, then run-time plugins): those stay with the earlier one.
    """
    reg = loaded_registry()
    registered = {name: plugin for name, plugin in plugin_manager.list_name_plugin() if plugin is not None}
    tried = plugin_records()
    absent = [name for name, record in tried.items() if record.status in ("failed", "unavailable")]
    records = []
    for name in sorted({*registered, *absent}):
        record = tried.get(name) or PluginRecord(name)
        callers = plugin_manager.get_hookcallers(registered[name]) if name in registered else None
        hooks = sorted(caller.name for caller in callers or [])
        owned = [key for key, owner in reg.owners.items() if owner == name]
        status = "failed" if name in reg.failures else "ok" if name in registered else record.status
        records.append(
            {
                "name": name,
                "version": record.version,
                "builtin": record.builtin,
                "hooks": hooks,
                "models": sorted(n for kind, n in owned if kind == "arch"),
                "formats": sorted(n for kind, n in owned if kind == "format"),
                "adapters": sorted(n for kind, n in owned if kind == "adapter"),
                "commands": sorted(n for kind, n in owned if kind == "command"),
                "shadowed": sorted(reg.shadowed.get(name, [])),
                "status": status,
                "error": reg.failures.get(name) or (record.error if status != "ok" else None),
            }
        )
    return records
