"""What plugins register: architecture specs, foreign checkpoint formats, adapters and command-line commands."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..engine import FORMS, StreamLayout
from ..engine._routes import RouteTable
from ..errors import PluginError
from ._training import TrainingState

if TYPE_CHECKING:
    import argparse

__all__ = ["Adapter", "ArchSpec", "CheckpointFormat", "Command", "ImportedCheckpoint"]

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith("-rev"):
        raise PluginError(
            f"{what} name {name!r} must be lowercase words joined by '-' and not end in '-rev' "
            "(the reversible form's name is derived)"
        )


def _check_fields(spec: ArchSpec) -> None:
    """Raises PluginError naming the architecture when a field has the wrong type (the ones later code relies on)."""
    where = f"architecture {spec.name!r}:"
    if isinstance(spec.aliases, str) or not isinstance(spec.aliases, (tuple, list)):
        shown = f"the string {spec.aliases!r}" if isinstance(spec.aliases, str) else repr(spec.aliases)
        raise PluginError(f"{where} aliases must be a tuple of names, not {shown} (write aliases=({spec.aliases!r},))")
    if spec.card is not None and (not isinstance(spec.card, str) or not spec.card):
        raise PluginError(f"{where} card must be a path such as 'model_card.md' or None, got {spec.card!r}")
    if spec.example_inputs is not None and not callable(spec.example_inputs):
        raise PluginError(f"{where} example_inputs must be a function (model, generator) -> (args, kwargs) or None, "
                          f"got {spec.example_inputs!r}")
    if not isinstance(spec.routes, Mapping) or not all(isinstance(key, str) for key in spec.routes):
        raise PluginError(f"{where} routes must map keyword names to 'f', 'g' or 'both', got {spec.routes!r}")
    try:
        RouteTable(dict(spec.routes), 1)  # the engine's own check, so a spec accepts what a stack accepts
    except ValueError as err:
        raise PluginError(f"{where} {err}") from err
    if spec.subname_key is not None and not isinstance(spec.subname_key, str):
        raise PluginError(f"{where} subname_key must be a config key or None, got {spec.subname_key!r}")
    for label in ("defaults", "small"):
        value = getattr(spec, label)
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise PluginError(f"{where} {label} must map config keys (strings) to values, got {value!r:.200}")
    for label in ("foreign_class",):
        if not isinstance(getattr(spec, label), bool):
            raise PluginError(f"{where} {label} must be True or False, got {getattr(spec, label)!r}")
    if spec.hub_config is not None and not callable(spec.hub_config):
        raise PluginError(f"{where} hub_config must be a function (config_json) -> config or None, got {spec.hub_config!r}")


@dataclass(frozen=True)
class ArchSpec:
    """An architecture as a plugin registers it; validated in full on construction.

    `builder(*, form, **config)` returns an nn.Module holding ReversibleSequence stacks.
    `defaults` names every config key the builder accepts. `routes` and `layout` are
    what every ReversibleSequence of a built model uses: `create` refuses a model whose stacks
    differ (PluginError naming the stack and key), so `revzoo info` shows the truth. When
    `subname_key` is set, `create("NAME/SUB")` passes SUB as that config key; with `open_config`,
    unknown overrides reach the builder instead of raising (for wrappers such as timm's models).
    `example_inputs(model, generator)` returns `(args, kwargs)` of a small seeded call, used
    by `revzoo convert --probe`, `revzoo bench` and the model cards. `small` holds the
    overrides of a small instance, which `revzoo bench` measures.

    `schema` is the version of the architecture's files (its state-dict keys and config),
    recorded in every file saved. When it changes, `migrations[v]` turns a file of schema
    `v` into `v + 1`: `(tensors, config) -> (tensors, config)`, `tensors` a read-only mapping
    of the file's tensors by name; `revzoo.load` chains them, so files already shipped keep loading.

    `hub_config(config_json)` recognises another library's Hub directory (transformers' `config.json`):
    it returns the config that builds that model (its weights are the directory's `model.safetensors`),
    or None when the directory is not one of this architecture's, so `revzoo.load(DIR)` and
    `revzoo convert DIR ...` read such directories.

    `foreign_class` marks a builder that returns another library's model class converted in place (a
    transformers model keeps its class), not a `revzoo.ZooModel`: use `revzoo.set_form` on it.

    `not_preservable` says why `revzoo.reversibilize` cannot turn a trained sequential model of this architecture into
    a reversible one of nearly the same function (None: each block becomes `F` as it is).
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    forms: tuple[str, ...] = FORMS
    routes: Mapping[str, str] = field(default_factory=dict)
    layout: StreamLayout | None = None
    card: str | None = None
    aliases: tuple[str, ...] = ()
    subname_key: str | None = None
    open_config: bool = False
    example_inputs: Callable[[nn.Module, torch.Generator], tuple[tuple, dict]] | None = None
    small: Mapping[str, Any] = field(default_factory=dict)
    not_preservable: str | None = None
    foreign_class: bool = False
    hub_config: Callable[[Mapping[str, Any]], dict[str, Any] | None] | None = None
    schema: int = 1
    migrations: Mapping[int, Callable[[Mapping[str, Any], dict[str, Any]], tuple[Mapping[str, Any], dict[str, Any]]]] = (
        field(default_factory=dict))

    def __post_init__(self) -> None:
        _check_name(self.name, "architecture")
        _check_fields(self)
        for alias in self.aliases:
            _check_name(alias, f"architecture {self.name!r}: alias")
        if not callable(self.builder):
            raise PluginError(f"architecture {self.name!r}: builder must be callable, got {self.builder!r}")
        if not isinstance(self.description, str) or not self.description or "\n" in self.description:
            raise PluginError(f"architecture {self.name!r}: description must be one non-empty line")
        if not self.forms or any(form not in FORMS for form in self.forms):
            raise PluginError(f"architecture {self.name!r}: forms {self.forms!r} must be a non-empty subset of {FORMS}")
        if self.layout is not None and not isinstance(self.layout, StreamLayout):
            raise PluginError(f"architecture {self.name!r}: layout must be a revzoo.StreamLayout or None")
        try:
            json.dumps(dict(self.defaults))
        except TypeError as err:
            raise PluginError(f"architecture {self.name!r}: defaults must be JSON-serialisable ({err})") from err
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "routes", MappingProxyType(dict(self.routes)))
        unknown = sorted(set(self.small) - set(self.defaults))
        if unknown and not self.open_config:
            raise PluginError(f"architecture {self.name!r}: small names unknown config keys {unknown}")
        object.__setattr__(self, "small", MappingProxyType(dict(self.small)))
        if self.not_preservable is not None and (not isinstance(self.not_preservable, str) or not self.not_preservable):
            raise PluginError(f"architecture {self.name!r}: not_preservable must be a reason (a non-empty str) or None")
        object.__setattr__(self, "forms", tuple(self.forms))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        self._check_schema()

    def _check_schema(self) -> None:
        if not isinstance(self.schema, int) or isinstance(self.schema, bool) or self.schema < 1:
            raise PluginError(f"architecture {self.name!r}: schema must be a positive int, got {self.schema!r}")
        for version, migrate in dict(self.migrations).items():
            if not isinstance(version, int) or not 1 <= version < self.schema or not callable(migrate):
                raise PluginError(
                    f"architecture {self.name!r}: migrations maps an older schema version (1 to {self.schema - 1}) "
                    f"to a callable; got {version!r}: {migrate!r}"
                )
        object.__setattr__(self, "migrations", MappingProxyType(dict(self.migrations)))


@dataclass(frozen=True)
class ImportedCheckpoint:
    """What a format's reader returns: enough to build the model and load its tensors.

    `training` is the optimizer's and scheduler's state and the epoch, where the file holds
    them under revzoo's parameter names; `import_checkpoint` writes it beside the model.
    """

    architecture: str
    config: Mapping[str, Any]
    form: str
    tensors: Mapping[str, Any]
    training: TrainingState | None = None


@dataclass(frozen=True)
class CheckpointFormat:
    """A foreign checkpoint layout (e.g. DALLE-pytorch's) that revzoo can import and maybe export.

    `read(obj, **options)` takes what revzoo read from the file without pickle (a dict of
    tensors for safetensors, the `torch.load(weights_only=True)` object for .pt files) and
    returns an ImportedCheckpoint. `write(model)` returns the object to save in the foreign
    layout, or is None when exporting is not supported. `write_training(model, state)`
    returns the entries that carry a TrainingState in that object (e.g. `opt_state`), or is
    None when the layout has no place for it. `architectures` names the architectures its files
    hold, where that is not every architecture of its plugin: model cards show the format under those.
    """

    name: str
    description: str
    read: Callable[..., ImportedCheckpoint]
    write: Callable[[nn.Module], Any] | None = None
    write_training: Callable[[nn.Module, TrainingState], Mapping[str, Any]] | None = None
    architectures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "format")
        if not (isinstance(self.architectures, tuple) and all(isinstance(name, str) for name in self.architectures)):
            raise PluginError(f"format {self.name!r}: architectures must be a tuple of architecture names, "
                              f"got {self.architectures!r}")
        if not callable(self.read) or any(hook is not None and not callable(hook)
                                          for hook in (self.write, self.write_training)):
            raise PluginError(f"format {self.name!r}: read (and write, write_training, if given) must be callable")
        if self.write_training is not None and self.write is None:
            raise PluginError(f"format {self.name!r}: write_training needs write (export) too")


@dataclass(frozen=True)
class Adapter:
    """Turns a model instance of another library (e.g. a timm ViT) into a revzoo model sharing its weights, and back.

    `wrap(model, form=...)` returns the revzoo model, with `revzoo_architecture` and
    `revzoo_config` set so that `revzoo.save` can rebuild it; `unwrap(model)` returns the
    foreign model, or is None when going back is not supported. `accepts(model)`, when given, says
    whether `wrap(model, form="sequential")` converts `model` in place (keeping its class), so that
    `revzoo.reversibilize(model)` works on that library's models directly.
    """

    name: str
    description: str
    wrap: Callable[..., nn.Module]
    unwrap: Callable[[nn.Module], Any] | None = None
    accepts: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "adapter")
        if not callable(self.wrap) or any(hook is not None and not callable(hook) for hook in (self.unwrap, self.accepts)):
            raise PluginError(f"adapter {self.name!r}: wrap (and unwrap, accepts, if given) must be callable")


@dataclass(frozen=True)
class Command:
    """A `revzoo` sub-command that a plugin adds (the dalle plugin's `generate`), as llm's plugins add theirs.

    `configure(parser)` adds the command's arguments to its `argparse.ArgumentParser`; it runs
    whenever the command line lists the plugins' commands (`revzoo --help`), so it should be
    cheap: import what the command needs in `run`. `run(args)` runs the command with the parsed
    `argparse.Namespace`. Bad input is a `revzoo.RevzooError`, which the command line prints as
    one line with exit code 2, as for its own commands. `help` is the line `revzoo --help` shows.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], None]
    configure: Callable[[argparse.ArgumentParser], None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PluginError(f"command name {self.name!r} must be lowercase words joined by '-'")
        if not isinstance(self.help, str) or not self.help or "\n" in self.help:
            raise PluginError(f"command {self.name!r}: help must be one non-empty line")
        if not callable(self.run) or (self.configure is not None and not callable(self.configure)):
            raise PluginError(f"command {self.name!r}: run (and configure, if given) must be callable")
