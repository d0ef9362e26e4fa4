"""Opening safetensors files, and writing any checkpoint file atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from ..errors import CheckpointError

__all__ = [
    "SAFETENSORS_SUFFIX",
    "atomic_write",
    "atomic_write_all",
    "check_output",
    "open_safetensors",
    "progress_bar",
    "require_file",
]

SAFETENSORS_SUFFIX = ".safetensors"


def require_file(path: str | os.PathLike) -> Path:
    """Returns `path` as a Path, or raises CheckpointError if it is not a readable file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    return path


@contextmanager
def open_safetensors(path: str | os.PathLike) -> Iterator[Any]:
    """Opens a safetensors file lazily (tensors are read one at a time), with a clear error if it is corrupt."""
    path = require_file(path)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt: {err})") from err
    with handle as opened:
        yield opened


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it into place.

    A failure or interruption leaves no file at `path` (and the previous one, if any, untouched).
    """
    return atomic_write_all({Path(path): write})[0]


def atomic_write_all(writes: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """Writes every file to a temporary name beside it, and only then renames them all into place, in order.

    A failure while writing leaves none of the outputs (and any previous files untouched);
    a failure during the renames removes the outputs already renamed. Put the file that
    says the set is complete (a shard index) last.
    """
    for path in writes:
        if not path.parent.exists():
            raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    temporaries: dict[Path, Path] = {}
    renamed: list[Path] = []
    try:
        for path, write in writes.items():
            handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(handle)
            temporaries[path] = Path(tmp_name)
            write(temporaries[path])
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        for path in renamed:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
    return list(writes)


def progress_bar(total: int, description: str) -> tqdm:
    """Returns a byte-counting bar shown only on a terminal and only once the work has run for a second."""
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, delay=1.0,
                disable=not sys.stderr.isatty(), leave=False)


def check_output(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool) -> None:
    """Refuses to write over the input, or over any existing file without `overwrite`."""
    dst = Path(dst)
    if not dst.exists():
        return
    if Path(src).exists() and os.path.samefile(src, dst):
        if not overwrite:
            raise CheckpointError(f"{dst}: output is the input file; pass --overwrite to replace it")
    elif not overwrite:
        raise CheckpointError(f"{dst}: already exists; pass --overwrite to replace it")
