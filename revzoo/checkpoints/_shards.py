"""Hugging Face-style sharded checkpoints: `model.safetensors.index.json` maps each tensor to its shard file.

Large models outgrow one file (hubs cap file sizes, downloads resume per file), so the
Hugging Face layout splits the tensors over `model-00001-of-00003.safetensors`, ... and
an index whose `weight_map` names the shard of every tensor. revzoo reads that layout
tensor by tensor across shards, and writes it with the index renamed into place last.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ._io import SAFETENSORS_SUFFIX, open_safetensors, require_file
from ._state import TensorSource, name_listing
from ._stream import StoredTensor, read_header, read_stored
from ._write import atomic_write_all

__all__ = [
    "INDEX_SUFFIX",
    "ShardIndex",
    "is_index",
    "open_tensors",
    "parse_size",
    "read_index",
    "stored_tensors",
    "write_checkpoint",
]

INDEX_SUFFIX = ".index.json"
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # huggingface_hub's SIZE_UNITS


def is_index(path: str | os.PathLike) -> bool:
    """Returns whether `path` names a shard index rather than a single safetensors file."""
    return str(path).lower().endswith(INDEX_SUFFIX)


@dataclass(frozen=True)
class ShardIndex:
    """A parsed index: its string metadata and, per tensor name, the shard file that holds it."""

    path: Path
    metadata: dict[str, str]
    weight_map: dict[str, Path]

    def shards(self) -> list[Path]:
        """Returns the shard files in the order the index first names them."""
        return list(dict.fromkeys(self.weight_map.values()))


def read_index(path: str | os.PathLike) -> ShardIndex:
    """Returns the index at `path`, or raises CheckpointError if it is not JSON, names no tensors, or a shard is missing."""
    path = require_file(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a readable shard index (not JSON: {err})") from err
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path}: not a shard index: it needs a non-empty \"weight_map\" of tensor name -> shard file")
    foreign = sorted({name for name in weight_map.values() if Path(name).name != name or name in (".", "..")})
    if foreign:
        raise CheckpointError(f"{path}: refused: shards must sit beside the index, not {name_listing('elsewhere', foreign)}")
    other = sorted({name for name in weight_map.values() if not name.lower().endswith(SAFETENSORS_SUFFIX)})
    if other:
        listing = name_listing("other", other)
        raise CheckpointError(f"{path}: refused: only {SAFETENSORS_SUFFIX} shards are read (never pickles), not {listing}")
    missing = sorted({name for name in weight_map.values() if not (path.parent / name).is_file()})
    if missing:
        raise CheckpointError(f"{path}: {name_listing('shard files missing', missing)}")
    metadata = content.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: not a shard index: its \"metadata\" is not a JSON object")
    strings = {key: value for key, value in metadata.items() if isinstance(value, str) and key != "total_size"}
    return ShardIndex(path, strings, {key: path.parent / name for key, name in weight_map.items()})


def stored_tensors(path: str | os.PathLike) -> list[StoredTensor]:
    """Returns the tensors of a safetensors file or shard index, shard by shard in file order, each file validated.

    Raises CheckpointError if a file is corrupt or the index names a tensor its shard lacks.
    """
    index = read_index(path) if is_index(path) else None
    tensors: list[StoredTensor] = []
    for file in index.shards() if index else [require_file(path)]:
        with open_safetensors(file):  # safetensors checks the header and the data offsets
            pass
        tensors += [t for t in read_header(file)[1] if index is None or index.weight_map.get(t.name) == file]
    if index is not None:
        found = {tensor.name for tensor in tensors}
        absent = sorted(f"{key} ({shard.name})" for key, shard in index.weight_map.items() if key not in found)
        if absent:
            raise CheckpointError(f"{index.path}: the index names tensors its shards lack: {name_listing('absent', absent)}")
    return tensors


@contextmanager
def open_tensors(path: str | os.PathLike) -> Iterator[tuple[dict[str, str], TensorSource]]:
    """Opens a safetensors file or a shard index; yields its metadata and its tensors, read one at a time on demand."""
    tensors = {tensor.name: tensor for tensor in stored_tensors(path)}  # validates every file first
    metadata = read_index(path).metadata if is_index(path) else read_header(Path(path))[0]
    with ExitStack() as stack:
        streams = {file: stack.enter_context(open(file, "rb")) for file in {t.file for t in tensors.values()}}
        yield metadata, TensorSource(
            {name: tensor.torch_shape for name, tensor in tensors.items()},
            {name: tensor.torch_dtype for name, tensor in tensors.items()},
            lambda name: read_stored(tensors[name], streams[tensors[name].file]),
        )


def parse_size(size: int | str) -> int:
    """Returns a shard size in bytes from an int or text such as `500MB`, read as Hugging Face's `parse_size_to_int` does.

    Units are KB, MB, GB and TB (powers of ten, any case); a bare number or `GiB` is refused,
    as Hugging Face refuses it, so a size means the same to both. Unlike Hugging Face, a size
    under one byte is refused rather than putting every tensor in a shard of its own.
    """
    text = str(size).strip()
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        try:
            value = int(float(text[:-2].strip()) * _UNITS[text[-2:].upper()])
        except (KeyError, ValueError, OverflowError):
            value = 0
    if value < 1:
        raise CheckpointError(
            f"invalid shard size {size!r}; expected a positive number of bytes or a size in KB, MB, GB or TB "
            "such as 500MB or 2GB (powers of ten, as Hugging Face reads them)"
        )
    return value


def _plan(sizes: Mapping[str, int], max_size: int) -> list[list[str]]:
    """Groups tensors into shards as Hugging Face's `split_state_dict_into_shards_factory` does.

    Tensors fill the current shard in order and a new one starts when the next would overflow
    it; a tensor larger than `max_size` gets a shard of its own without closing the current one.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    filled = 0
    for name, size in sizes.items():
        if size > max_size:
            groups.append([name])
            continue
        if filled + size > max_size:
            groups.append(current)
            current, filled = [], 0
        current.append(name)
        filled += size
    return groups + [current] if current or not groups else groups


def _index_path(path: Path) -> Path:
    return path if is_index(path) else path.with_name(path.name + INDEX_SUFFIX)


def _shard_paths(index_path: Path, count: int) -> list[Path]:
    stem = index_path.name[: -len(INDEX_SUFFIX)].removesuffix(SAFETENSORS_SUFFIX)
    return [index_path.with_name(f"{stem}-{i:05d}-of-{count:05d}{SAFETENSORS_SUFFIX}") for i in range(1, count + 1)]


def write_checkpoint(
    path: str | os.PathLike,
    sizes: Mapping[str, int],
    write_shard: Callable[[Sequence[str], Path], None],
    metadata: Mapping[str, str],
    max_shard_size: int | str | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    check_output: Callable[[Path], None] | None = None,
    overwrite: bool = True,
    beside: Mapping[Path, Callable[[Path], None]] | None = None,
) -> Path:
    """Writes tensors (`sizes`: name -> bytes, in file order) as one file or as shards + index; returns what to load.

    `write_shard(names, tmp)` writes one safetensors file. The output is sharded when
    `path` names an index, or when `max_shard_size` splits the tensors into several shards
    (then the index is `path` + `.index.json`, as Hugging Face names it). `groups` keeps
    a given split (e.g. the input's shards) when no size is asked for. Every file is
    written before any is put in place; `check_output` vets each final path first. Without
    `overwrite`, an output that appears meanwhile is not replaced (CheckpointError). An index
    written over an older one removes the older one's shards that the new one does not use.
    `beside` maps more files to their writers (a training state): written with the
    checkpoint, all or none.
    """
    path = Path(path)
    names = list(sizes)
    if max_shard_size is not None:
        groups = _plan(sizes, parse_size(max_shard_size))
    elif groups is None or not is_index(path):
        groups = [names]
    if len(groups) == 1 and not is_index(path):
        if check_output is not None:
            check_output(path)
        return atomic_write_all({path: lambda tmp: write_shard(names, tmp), **(beside or {})}, overwrite)[0]
    index_path = _index_path(path)
    shard_paths = _shard_paths(index_path, len(groups))
    for output in (*shard_paths, index_path):
        if check_output is not None:
            check_output(output)
    index = {
        "metadata": {**metadata, "total_size": sum(sizes.values())},
        "weight_map": {name: shard.name for shard, group in zip(shard_paths, groups) for name in group},
    }
    writes: dict[Path, Callable[[Path], None]] = {
        shard: (lambda tmp, group=group: write_shard(group, tmp)) for shard, group in zip(shard_paths, groups)
    }
    writes.update(beside or {})
    writes[index_path] = lambda tmp: tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    previous = _shards_of(index_path)
    atomic_write_all(writes, overwrite)
    for shard in previous - set(shard_paths):
        shard.unlink(missing_ok=True)
    return index_path


def _shards_of(index_path: Path) -> set[Path]:
    """Returns the shard files that an existing index beside them names and that this index's own writes would
    have named (`STEM-00001-of-00003.safetensors`): none if it is absent or unreadable. Other files an index
    names (an unrelated model's, the conversion's own input) are never the index's to remove."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        names = {name for name in weight_map.values() if isinstance(name, str)}
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, RecursionError):
        return set()
    stem = re.escape(index_path.name[: -len(INDEX_SUFFIX)].removesuffix(SAFETENSORS_SUFFIX))
    own = re.compile(rf"{stem}-\d{{5,}}-of-\d{{5,}}{re.escape(SAFETENSORS_SUFFIX)}")
    return {index_path.parent / name for name in names if own.fullmatch(name)}
