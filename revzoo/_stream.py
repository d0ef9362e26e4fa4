"""Rewriting safetensors files without decoding their tensors: new headers, data copied in chunks.

Converting a checkpoint changes only its metadata (and perhaps its sharding), so each
tensor's bytes are copied as they are through one small buffer: memory stays flat
whatever the size of the file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._shards import is_index, read_index
from .errors import CheckpointError

__all__ = ["StoredTensor", "stored_tensors", "write_stored"]

_HEADER_ALIGNMENT = 8
_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes lie in a safetensors file, and what its header entry says."""

    name: str
    file: Path
    dtype: str
    shape: list[int]
    start: int
    length: int


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated header)")
        (length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError, MemoryError, OverflowError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file (header is not JSON)") from err
    return header, 8 + length


def stored_tensors(path: str | os.PathLike) -> list[StoredTensor]:
    """Returns the tensors of a safetensors file or shard index, shard by shard in file order.

    The files should have been opened once through safetensors, which validates them.
    """
    if is_index(path):
        weight_map = read_index(path).weight_map
        files = list(dict.fromkeys(weight_map.values()))
    else:
        weight_map, files = None, [Path(path)]
    tensors = []
    for file in files:
        header, data_offset = _read_header(file)
        header.pop("__metadata__", None)
        tensors += sorted(
            (StoredTensor(name, file, entry["dtype"], entry["shape"], data_offset + entry["data_offsets"][0],
                          entry["data_offsets"][1] - entry["data_offsets"][0])
             for name, entry in header.items() if weight_map is None or weight_map.get(name) == file),
            key=lambda tensor: tensor.start,
        )
    return tensors


def _copy_range(source: BinaryIO, target: BinaryIO, length: int, buffer: memoryview, advance: Callable[[int], None]) -> None:
    while length:
        count = source.readinto(buffer[: min(length, len(buffer))])
        if not count:
            raise CheckpointError(f"{source.name}: truncated (its data ends before the header says)")
        target.write(buffer[:count])
        advance(count)
        length -= count


def write_stored(
    tensors: Sequence[StoredTensor], path: Path, metadata: Mapping[str, str], advance: Callable[[int], None]
) -> None:
    """Writes `tensors`, copied from their files, as one safetensors file at `path` with `metadata`."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for tensor in tensors:
        entry = {"dtype": tensor.dtype, "shape": tensor.shape, "data_offsets": [offset, offset + tensor.length]}
        header[tensor.name] = entry
        offset += tensor.length
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % _HEADER_ALIGNMENT)
    buffer = memoryview(bytearray(_COPY_CHUNK))
    with ExitStack() as stack, open(path, "wb") as target:
        sources: dict[Path, BinaryIO] = {}
        target.write(struct.pack("<Q", len(encoded)))
        target.write(encoded)
        for tensor in tensors:
            if tensor.file not in sources:
                sources[tensor.file] = stack.enter_context(open(tensor.file, "rb"))
            sources[tensor.file].seek(tensor.start)
            _copy_range(sources[tensor.file], target, tensor.length, buffer, advance)
