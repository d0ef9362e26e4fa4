"""Safetensors files at the byte level: tensors read with plain file reads, files rewritten in chunks.

Reading through a memory map leaves every page read resident in the process until the
file is closed, which doubles the peak of a load; plain reads into a fresh tensor do not.
Converting changes only metadata (and perhaps the sharding), so each tensor's bytes are
copied as they are through one small buffer: memory stays flat whatever the file's size.
"""

from __future__ import annotations

import functools
import json
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import safetensors.torch
import torch

from ..errors import CheckpointError

__all__ = ["StoredTensor", "read_header", "read_stored", "safetensors_dtypes", "write_stored"]

@functools.cache
def safetensors_dtypes() -> dict[str, tuple[torch.dtype, int]]:
    """Returns, per safetensors dtype code, the torch dtype it reads as and how many values one stored element packs.

    Derived by asking the installed safetensors which code it writes for each dtype the
    installed torch has, so a dtype both support (F8_E4M3FNUZ, F8_E8M0, packed F4, ...) is
    read, and one they gain later needs no table edit here.
    """
    table: dict[str, tuple[torch.dtype, int]] = {}
    candidates = {value for value in vars(torch).values() if isinstance(value, torch.dtype)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns on creating experimental dtypes (complex32, ...)
        for dtype in sorted(candidates, key=str):
            try:
                encoded = safetensors.torch.save({"x": torch.empty(1, 2, dtype=dtype)})
            except Exception:  # safetensors (or torch on CPU) cannot store this dtype
                continue
            (length,) = struct.unpack("<Q", encoded[:8])
            entry = json.loads(encoded[8 : 8 + length])["x"]
            table[entry["dtype"]] = (dtype, entry["shape"][-1] // 2)
    return table


_HEADER_ALIGNMENT = 8
_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes lie in a safetensors file, and what its header entry says."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    length: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return self._read_as()[0]

    @property
    def torch_shape(self) -> tuple[int, ...]:
        """Returns the shape of the torch tensor: a packed dtype's header counts values, torch counts elements."""
        packing = self._read_as()[1]
        return (*self.shape[:-1], self.shape[-1] // packing) if packing > 1 and self.shape else self.shape

    def _read_as(self) -> tuple[torch.dtype, int]:
        table = safetensors_dtypes()
        if self.dtype not in table:
            raise CheckpointError(
                f"{self.file}: tensor {self.name} has dtype {self.dtype!r}, which the installed safetensors and torch "
                f"cannot read together (they read {', '.join(sorted(table))})"
            )
        return table[self.dtype]


def read_header(file: Path) -> tuple[dict[str, str], list[StoredTensor]]:
    """Returns a safetensors file's metadata and its tensors in file order.

    Open the file once with safetensors first: that validates the header and the offsets.
    """
    with open(file, "rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: not a readable safetensors file (truncated header)")
        (length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as err:
            raise CheckpointError(f"{file}: not a readable safetensors file (header is not JSON)") from err
    metadata = header.pop("__metadata__", None) or {}
    data_offset = 8 + length
    tensors = [
        StoredTensor(name, file, entry["dtype"], tuple(entry["shape"]), data_offset + entry["data_offsets"][0],
                     entry["data_offsets"][1] - entry["data_offsets"][0])
        for name, entry in header.items()
    ]
    return metadata, sorted(tensors, key=lambda tensor: tensor.start)


def read_stored(tensor: StoredTensor, stream: BinaryIO) -> torch.Tensor:
    """Returns a new tensor read from `stream` (the tensor's open file) with plain reads, not a memory map."""
    data = torch.empty(tensor.length, dtype=torch.uint8)
    stream.seek(tensor.start)
    if stream.readinto(memoryview(data.numpy())) != tensor.length:
        raise CheckpointError(f"{tensor.file}: truncated (its data ends before the header says)")
    return data.view(tensor.torch_dtype).reshape(tensor.torch_shape)


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
        entry = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.length]}
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
