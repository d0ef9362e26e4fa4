"""Reading checkpoint files without pickle, and writing them atomically."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError

__all__ = [
    "SAFETENSORS_SUFFIX",
    "TORCH_SUFFIXES",
    "atomic_write",
    "check_output",
    "open_safetensors",
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

    `.safetensors` gives a dict of tensors; `.pt/.pth/.bin/.ckpt` go through
    `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
    """
    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        with open_safetensors(path) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
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
    path = Path(path)
    if not path.parent.exists():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
