"""Reading checkpoint files without pickle, and writing them atomically."""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from .errors import CheckpointError

__all__ = [
    "SAFETENSORS_SUFFIX",
    "TORCH_SUFFIXES",
    "atomic_write",
    "atomic_write_all",
    "check_output",
    "open_safetensors",
    "progress_bar",
    "read_foreign",
    "require_file",
    "tensor_items",
]

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


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


def read_foreign(path: str | os.PathLike) -> Any:
    """Returns a foreign checkpoint's content, read without executing pickled code.

    `.safetensors` (or a sharded `model.safetensors.index.json`) gives a dict of tensors;
    `.pt/.pth/.bin/.ckpt` go through `torch.load(weights_only=True)`, which refuses anything
    but tensors and plain containers.
    """
    from ._shards import is_index, open_tensors  # imported here: _shards builds on this module

    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX or is_index(path):
        with open_tensors(path) as (_, source):
            return {key: source.get(key) for key in source.shapes}
    if suffix in TORCH_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{path}: refused: it holds pickled objects other than tensors and plain containers, "
                "and revzoo never unpickles code (torch.load weights_only=True)"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({str(err).splitlines()[0]})") from err
    raise CheckpointError(
        f"{path}: refused: unknown file type {suffix or '(none)'!r}; revzoo reads {SAFETENSORS_SUFFIX} and, "
        f"without unpickling code, {', '.join(TORCH_SUFFIXES)}"
    )


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


def tensor_items(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Returns the tensors of a flat state dict, refusing anything that is not one."""
    bad = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"expected a state dict of tensors; {len(bad)} entries are not tensors: {bad[:3]}")
    return dict(obj)
