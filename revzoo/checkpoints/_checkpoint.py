"""revzoo checkpoints: self-describing safetensors files, converted between forms, imported from foreign formats."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import LAYOUT_VERSION, __version__
from ..engine import FORMS, coupling_record, get_form
from ..errors import CheckpointError, CheckpointWarning
from ..registry import TrainingState, get_format, resolve
from ._build import build_for, read_with
from ._device import check_device
from ._directory import pretrained_files
from ._foreign import read_foreign, tensor_items
from ._io import SAFETENSORS_SUFFIX, check_output, progress_bar, require_file, save_safetensors, save_torch
from ._provenance import file_architecture, migrate, provenance_metadata
from ._shards import is_index, open_tensors, stored_tensors, write_checkpoint
from ._state import TensorSource, chosen_dtype, fit_tensors, tied_groups
from ._stream import write_stored
from ._training import (
    carried_training_state,
    drop_stale_training_state,
    read_training_state,
    refuse_input_as_training_state,
    training_state_beside,
    training_state_file,
)
from ._write import atomic_write

__all__ = ["convert", "export_checkpoint", "import_checkpoint", "load", "read_metadata", "save"]

_KEY = "revzoo."


def built_by_create(model: nn.Module, consequence: str) -> tuple[str, dict]:
    """Returns the architecture and config `revzoo.create` recorded on `model`; raises, ending with `consequence`."""
    architecture = getattr(model, "revzoo_architecture", None)
    config = getattr(model, "revzoo_config", None)
    if architecture is None or config is None:
        raise CheckpointError(
            f"{type(model).__name__} was not built by revzoo.create (it has no revzoo_architecture/revzoo_config)"
            + consequence
        )
    return architecture, config


def _metadata(model: nn.Module, aliases: Mapping[str, str]) -> dict[str, str]:
    architecture, config = built_by_create(model, "; save its state_dict with safetensors instead")
    try:
        coupling = coupling_record(model)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    return {
        "format": "pt",
        _KEY + "architecture": architecture,
        _KEY + "form": get_form(model),
        _KEY + "config": json.dumps(config, sort_keys=True),
        _KEY + "version": __version__,
        _KEY + "layout_version": str(LAYOUT_VERSION),
        _KEY + "aliases": json.dumps(dict(aliases), sort_keys=True),
        **({_KEY + "coupling": json.dumps(coupling, sort_keys=True)} if coupling else {}),
        **provenance_metadata(architecture),
    }


def save(model: nn.Module, path: str | os.PathLike, max_shard_size: int | str | None = None) -> Path:
    """Writes the model's weights and what rebuilds it to a safetensors file, atomically; returns the path to load.

    Tied tensors are stored once; the file records their other names. With
    `max_shard_size` (bytes, or text such as "500MB"), or when `path` ends in
    `.index.json`, the tensors go to Hugging Face-style shards plus an index, each
    carrying the revzoo metadata; the index's path is returned.

    Example:
        >>> revzoo.save(revzoo.create("dalle-rev", depth=2), "dalle.safetensors")
    """
    return _write_model(model, path, max_shard_size, overwrite=True)


def _write_model(model: nn.Module, path: str | os.PathLike, max_shard_size: int | str | None, overwrite: bool,
                 beside: Mapping[Path, Callable[[Path], None]] | None = None) -> Path:
    state = model.state_dict(keep_vars=True)
    groups = tied_groups(model)
    aliases = {name: group[0] for group in groups for name in group[1:]}
    metadata = _metadata(model, aliases)
    tensors = _unshared({group[0]: state[group[0]] for group in groups})
    sizes = {name: tensor.numel() * tensor.element_size() for name, tensor in tensors.items()}

    def write_shard(names, tmp: Path) -> None:
        save_safetensors({name: tensors[name] for name in names}, tmp, metadata)

    return write_checkpoint(path, sizes, write_shard, metadata, max_shard_size, overwrite=overwrite, beside=beside)


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns contiguous CPU copies-or-views that safetensors accepts: no two share storage."""
    result: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else 0
        result[name] = tensor.clone() if pointer in storages else tensor.contiguous()
        storages.add(pointer)
    return result


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Returns a revzoo file's (or shard index's) architecture, form, config, version and aliases, checked."""
    with open_tensors(path) as (raw, _):
        return _parse_metadata(raw, Path(path))


def _parse_metadata(raw: Mapping[str, str], path: Path) -> dict[str, Any]:
    if _KEY + "architecture" not in raw:
        raise CheckpointError(
            f"{path}: no revzoo metadata (a bare state dict?); load it with revzoo.load(path, architecture=NAME)"
        )
    try:
        layout = int(raw.get(_KEY + "layout_version", "1"))
        config = json.loads(raw[_KEY + "config"])
        aliases = json.loads(raw.get(_KEY + "aliases", "{}"))
        coupling = json.loads(raw.get(_KEY + "coupling", "null"))
        schema = int(raw.get(_KEY + "schema", "1"))
    except (ValueError, KeyError, TypeError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise CheckpointError(f"{path}: corrupt revzoo metadata ({err})") from err
    if layout > LAYOUT_VERSION:
        raise CheckpointError(
            f"{path}: written by revzoo {raw.get(_KEY + 'version', '?')} with layout version {layout}; "
            f"this revzoo {__version__} reads up to {LAYOUT_VERSION}: upgrade revzoo"
        )
    form = raw.get(_KEY + "form")
    for name, value, valid in (
        ("config", config, isinstance(config, dict)),
        ("aliases", aliases, isinstance(aliases, dict) and all(isinstance(v, str) for v in aliases.values())),
        ("form", form, form is None or form in FORMS),
        ("coupling", coupling, coupling is None or isinstance(coupling, dict)),
    ):
        if not valid:
            expected = {"config": "a JSON object of options", "aliases": "a JSON object of tensor name -> stored name",
                        "form": " or ".join(FORMS), "coupling": "a JSON object per stack, or absent"}[name]
            raise CheckpointError(f"{path}: corrupt revzoo metadata: {name} must be {expected}, got {value!r:.80}")
    return {
        "architecture": raw[_KEY + "architecture"],
        "form": form,
        "config": config,
        "version": raw.get(_KEY + "version"),
        "aliases": aliases,
        "coupling": coupling,  # per stack: scales, swap, output, start, exact, adapter (see coupling_record)
        "schema": schema,  # of the architecture's files; older ones are migrated by the plugin on load
        "distribution": raw.get(_KEY + "distribution"),  # the package providing the architecture
        "plugin_version": raw.get(_KEY + "plugin_version"),
    }


def load(
    path: str | os.PathLike,
    form: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = "auto",
    architecture: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Rebuilds a model from a revzoo file's metadata and loads its weights, tensor by tensor.

    `path` is a safetensors file or a shard index (`model.safetensors.index.json`), or a
    Hugging Face Hub model directory (see `save_pretrained`), rebuilt from its config.json.
    `form` asks for the other form of the same weights. A file without revzoo metadata
    (a bare state dict, `.safetensors` or `.pt`) loads when `architecture` (and, if not
    the defaults, `config`) is given. `dtype="auto"` gives the model the file's floating dtype
    (the one most of its floating-point numbers have, as Hugging Face's `torch_dtype="auto"`),
    so a bfloat16 file stays bfloat16; None keeps the dtype the model is built in; a torch
    dtype (or its name) casts. A file of an older schema of its architecture is migrated by
    the plugin's migrations. Raises CheckpointError if anything does not fit, and ConfigError
    for a `device` this machine does not have, before reading the file (see `check_device`).

    Example:
        >>> model = revzoo.load("dalle.safetensors", form="sequential")
    """
    if device is not None:
        device = check_device(device)
    if Path(path).is_dir() and architecture is None and config is None:
        path, saved = pretrained_files(path)  # the weights' own metadata rebuilds the model when they carry it
        architecture, config, form = saved["architecture"], saved["config"], form or saved.get("form")
    path = require_file(path)
    if path.suffix.lower() != SAFETENSORS_SUFFIX and not is_index(path):
        if architecture is None:
            raise CheckpointError(f"{path}: only {SAFETENSORS_SUFFIX} files carry revzoo metadata; pass architecture=NAME")
        source = TensorSource.from_tensors(tensor_items(read_foreign(path)))
        model = build_for(source, str(path), architecture, form, dict(config or {}))
        model = model.to(device=device, dtype=chosen_dtype(dtype, source))  # before the copy: no rounding on the way
        fit_tensors(model, source, str(path))
        return model
    with open_tensors(path) as (raw, source):
        if architecture is not None and _KEY + "architecture" not in raw:
            meta = {"architecture": architecture, "form": None, "config": dict(config or {}), "aliases": {},
                    "schema": resolve(architecture)[0].schema}
        else:
            meta = _parse_metadata(raw, path)
            if architecture is not None and resolve(architecture)[0].name != meta["architecture"]:
                raise CheckpointError(f"{path}: holds a {meta['architecture']!r} model, not {architecture!r}")
        config, source, aliases = migrate(file_architecture(meta, path), meta, source, path)
        model = build_for(source, str(path), meta["architecture"], form or meta["form"], config, aliases,
                          meta.get("coupling"))
        model = model.to(device=device, dtype=chosen_dtype(dtype, source))  # before the copy: no rounding on the way
        fit_tensors(model, source, str(path), aliases)
    return model


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str,
    *,
    overwrite: bool = False,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Writes a copy of a revzoo file recording form `to`; the tensor bytes are copied unchanged. Returns what to load.

    With `dtype` (e.g. "bfloat16"), or when the file has an older schema of its architecture,
    the model is loaded (cast, migrated) and saved instead of copied byte for byte.

    The two forms compute different functions of the same weights (see DESIGN.md). The
    data are streamed a chunk at a time, so memory stays flat whatever the file's size.
    `src` may be a shard index; `dst` is sharded when it ends in `.index.json` (keeping
    `src`'s shards) or when `max_shard_size` splits it (see `save`).

    `src`'s training state (NAME.training.safetensors beside it) is copied beside `dst`:
    the parameters keep their names in both forms.
    """
    if to not in FORMS:
        raise CheckpointError(f"unknown form {to!r}; expected one of {', '.join(FORMS)}")
    src = require_file(src)
    check_output(src, dst, overwrite)
    beside = carried_training_state(src, dst, overwrite)
    with open_tensors(src) as (raw, source):
        meta = _parse_metadata(raw, src)
        spec = file_architecture(meta, src)
        if to not in spec.forms:
            supported = ", ".join(spec.forms)
            raise CheckpointError(f"{src}: architecture {spec.name!r} has no {to!r} form; it supports {supported}")
        rewrite = dtype is not None or meta["schema"] != spec.schema
        if not rewrite:
            build_for(source, str(src), spec.name, to, meta["config"], meta["aliases"], meta["coupling"], real=False)
    if rewrite:
        path = _write_model(load(src, form=to, dtype=dtype or "auto"), dst, max_shard_size, overwrite, beside)
    else:
        path = _copy_as(src, dst, {"format": "pt", **raw, _KEY + "form": to}, max_shard_size, overwrite, beside)
    drop_stale_training_state(src, dst)
    return path


def _copy_as(src: Path, dst: str | os.PathLike, metadata: Mapping[str, str], max_shard_size: int | str | None,
             overwrite: bool, beside: Mapping[Path, Callable[[Path], None]]) -> Path:
    """Streams `src`'s tensors unchanged into `dst` under `metadata` (its shards kept unless resized)."""
    tensors = {tensor.name: tensor for tensor in stored_tensors(src)}
    shards: dict[Path, list[str]] = {}
    for tensor in tensors.values():
        shards.setdefault(tensor.file, []).append(tensor.name)
    sizes = {name: tensor.length for name, tensor in tensors.items()}
    with progress_bar(sum(sizes.values()), f"converting {src.name}") as bar:
        return write_checkpoint(
            dst, sizes, lambda names, tmp: write_stored([tensors[n] for n in names], tmp, metadata, bar.update),
            metadata, max_shard_size, groups=list(shards.values()),
            check_output=lambda path: check_output(src, path, overwrite), overwrite=overwrite, beside=beside,
        )


def import_checkpoint(
    format_name: str, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
    training_state: str | os.PathLike | None = None, **options: Any
) -> Path:
    """Converts a foreign checkpoint (e.g. DALLE-pytorch's) into a revzoo file; returns its path.

    Where the file holds an optimizer's and scheduler's state and the epoch (DALLE-pytorch's
    `opt_state`, `scheduler_state`, `epoch`), they go to `training_state`, by default
    NAME.training.safetensors beside `dst` (see `load_training_state`). Like `dst`, an
    existing file there is refused without `overwrite`; with it, the default one is replaced,
    or removed when this file has no training state (it belonged to the model replaced).
    """
    fmt = get_format(format_name)
    src = require_file(src)
    state_path = Path(training_state) if training_state is not None else training_state_beside(dst)
    check_output(src, dst, overwrite)
    refuse_input_as_training_state(src, state_path)
    check_output(src, state_path, overwrite)
    imported = read_with(fmt, read_foreign(src), str(src), options)
    if imported.training is None and training_state is not None:
        raise CheckpointError(f"{src}: holds no optimizer state to write to {training_state}")
    source = TensorSource.from_tensors(tensor_items(imported.tensors))
    model = build_for(source, str(src), imported.architecture, imported.form, imported.config)
    fit_tensors(model, source, str(src))
    if imported.training is None:
        path = _write_model(model, dst, None, overwrite)
        state_path.unlink(missing_ok=True)  # (the default path) it belonged to the model just replaced
        return path
    tensors, metadata = _training_file(model, imported.training, str(src))
    return _write_model(model, dst, None, overwrite,
                        beside={state_path: lambda tmp: save_safetensors(tensors, tmp, metadata)})


def _training_file(model: nn.Module, state: TrainingState, origin: str) -> tuple[dict, dict[str, str]]:
    """The imported training state under `model`'s parameter names, checked against them, as a file's contents."""
    state = state.for_model(model)
    unknown = sorted(set(state.parameter_names) - {name for name, _ in model.named_parameters()})
    if unknown:
        raise CheckpointError(f"{origin}: its optimizer state names parameters the model lacks: {unknown[:3]}")
    return training_state_file(state)


def export_checkpoint(format_name: str, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                      training_state: str | os.PathLike | None = None) -> Path:
    """Writes a revzoo file back in a foreign layout (.safetensors or a weights-only .pt); returns its path.

    The training state (`training_state`, by default NAME.training.safetensors beside `src`
    if there is one) goes into the file where the format has a place for it (DALLE-pytorch's
    `opt_state`, `scheduler_state`, `epoch`); the default one is left out, with a
    CheckpointWarning, where it has none.
    """
    fmt = get_format(format_name)
    if fmt.write is None:
        raise CheckpointError(f"format {format_name!r} can be imported but not exported")
    src = require_file(src)
    check_output(src, dst, overwrite)
    to_safetensors = Path(dst).suffix.lower() == SAFETENSORS_SUFFIX
    state_path = require_file(training_state) if training_state is not None else training_state_beside(src)
    if state_path.is_file() and (fmt.write_training is None or to_safetensors):
        reason = "a .safetensors export holds the weights only" if fmt.write_training else \
            f"format {format_name!r} has no place for it"
        if training_state is not None:
            raise CheckpointError(f"{state_path}: cannot export the training state: {reason}")
        warnings.warn(f"{state_path} not exported: {reason}", CheckpointWarning, stacklevel=2)
        state_path = None
    model = load(src)
    exported = fmt.write(model)
    if state_path is not None and state_path.is_file():
        if not isinstance(exported, Mapping):
            raise CheckpointError(f"format {format_name!r}: its writer returned {type(exported).__name__}, not a "
                                  "mapping that can take the training state")
        state = read_training_state(state_path)
        try:
            exported = {**exported, **fmt.write_training(model, state)}
        except CheckpointError as err:
            raise CheckpointError(f"{state_path}: {err}") from err
    if to_safetensors:
        tensors = _unshared(tensor_items(exported))
        return atomic_write(dst, lambda tmp: save_safetensors(tensors, tmp, None), overwrite)
    return atomic_write(dst, lambda tmp: save_torch(exported, tmp), overwrite)
