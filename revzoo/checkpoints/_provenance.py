"""Where a file comes from (plugin distribution, its version, the architecture's schema) and migrations of old files."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnknownModelError
from ..registry import ArchSpec, provenance, resolve
from ._state import TensorSource

__all__ = ["file_architecture", "migrate", "provenance_metadata"]

_KEY = "revzoo."


def provenance_metadata(architecture: str) -> dict[str, str]:
    """Returns the metadata entries saying which distribution, at which version, wrote this architecture's file."""
    origin = provenance(architecture)
    entries = {_KEY + "schema": str(origin["schema"])}
    for field in ("distribution", "plugin_version"):
        if origin[field] is not None:
            entries[_KEY + field] = origin[field]
    return entries


def file_architecture(meta: Mapping[str, Any], path: Path) -> ArchSpec:
    """Returns the spec of the file's architecture; a missing plugin or a newer schema is one clear error."""
    name = meta["architecture"]
    distribution = meta.get("distribution")
    try:
        spec = resolve(name)[0]
    except UnknownModelError as err:
        if distribution is None:
            raise
        written = f" {meta['plugin_version']}" if meta.get("plugin_version") else ""
        raise UnknownModelError(
            f"{path}: model {name!r} comes from the package {distribution!r} (version{written} wrote this file), "
            f"which is not installed or whose plugin did not load (see: revzoo plugins); pip install {distribution}"
        ) from err
    schema = meta.get("schema", 1)
    if schema > spec.schema:
        by = f" by {distribution} {meta.get('plugin_version') or ''}".rstrip() if distribution else ""
        raise CheckpointError(
            f"{path}: written{by} with schema {schema} of {name!r}; the installed plugin reads up to schema "
            f"{spec.schema}: upgrade the package that provides {name!r}"
        )
    return spec


class _FileTensors(Mapping[str, torch.Tensor]):
    """A file's tensors by name, each read when a migration asks for it; tied names included."""

    def __init__(self, source: TensorSource, aliases: Mapping[str, str]) -> None:
        self._source = source
        self._names = {**{name: name for name in source.shapes}, **{a: s for a, s in aliases.items() if s in source.shapes}}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._source.get(self._names[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def migrate(
    spec: ArchSpec, meta: Mapping[str, Any], source: TensorSource, path: Path
) -> tuple[dict[str, Any], TensorSource, Mapping[str, str]]:
    """Returns `(config, tensors, aliases)` of the file brought to the plugin's schema by its migrations."""
    config, schema = dict(meta["config"]), meta.get("schema", 1)
    if schema == spec.schema:
        return config, source, meta["aliases"]
    tensors: Mapping[str, torch.Tensor] = _FileTensors(source, meta["aliases"])
    for version in range(schema, spec.schema):
        step = spec.migrations.get(version)
        if step is None:
            raise CheckpointError(
                f"{path}: has schema {version} of {spec.name!r} and the installed plugin (schema {spec.schema}) "
                f"registers no migration from it; load it with the plugin version that wrote it"
            )
        try:
            tensors, config = step(tensors, config)
        except Exception as err:
            raise CheckpointError(f"{path}: migrating {spec.name!r} from schema {version} failed: {err}") from err
    return dict(config), TensorSource.from_tensors(dict(tensors)), {}
