"""Opening and saving safetensors files, vetting output paths, and the progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..errors import CheckpointError
from ._write import is_utf8

__all__ = [
    "SAFETENSORS_SUFFIX",
    "check_output",
    "open_safetensors",
    "progress_bar",
    "require_file",
    "save_safetensors",
    "save_torch",
]

SAFETENSORS_SUFFIX = ".safetensors"


def require_file(path: str | os.PathLike) -> Path:
    """Returns `path` as a Path, or raises CheckpointError if it is not a readable file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied (the file is not readable by this user)")
    return path


@contextmanager
def utf8_path(path: Path) -> Iterator[str]:
    """Yields a name safetensors (which takes only UTF-8 names) can open or write for `path`: the path itself;
    for a directory that is not UTF-8, the file's name inside the open directory (/proc/self/fd/N/NAME on Linux,
    beside which safetensors' own temporary also goes); for a file name that is not UTF-8, the open file."""
    if is_utf8(str(path)):
        yield str(path)
        return
    if is_utf8(path.name):
        descriptor, through = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY), path.name
    else:
        descriptor, through = os.open(path, os.O_RDONLY), ""
    try:
        name = os.path.join(f"/proc/self/fd/{descriptor}", through) if through else f"/proc/self/fd/{descriptor}"
        if not os.path.exists(f"/proc/self/fd/{descriptor}"):
            raise CheckpointError(f"{path}: safetensors opens only UTF-8 file names here; rename the file")
        yield name
    finally:
        os.close(descriptor)


@contextmanager
def open_safetensors(path: str | os.PathLike) -> Iterator[Any]:
    """Opens a safetensors file lazily (tensors are read one at a time), with a clear error if it is corrupt."""
    path = require_file(path)
    try:
        with utf8_path(path) as name:
            handle = safe_open(name, framework="pt", device="cpu")
    except PermissionError as err:
        raise CheckpointError(f"{path}: permission denied ({err.strerror})") from err
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt: {err})") from err
    with handle as opened:
        yield opened


def progress_bar(total: int, description: str) -> tqdm:
    """Returns a byte-counting bar shown only on a terminal and only once the work has run for a second."""
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, delay=1.0,
                disable=not sys.stderr.isatty(), leave=False)


def check_output(src: str | os.PathLike | None, dst: str | os.PathLike, overwrite: bool) -> None:
    """Refuses to write over the input (`src`, None when there is none), over a directory, or over any existing file
    without `overwrite`."""
    dst = Path(dst)
    if not dst.exists():
        return
    if dst.is_dir():
        raise CheckpointError(f"{dst}: is a directory; name a file to write")
    if src is not None and Path(src).exists() and os.path.samefile(src, dst):
        if not overwrite:
            raise CheckpointError(f"{dst}: output is the input file; pass --overwrite to replace it")
    elif not overwrite:
        raise CheckpointError(f"{dst}: already exists; pass --overwrite to replace it")


def save_safetensors(tensors: Mapping[str, torch.Tensor], tmp: Path, metadata: Mapping[str, str] | None) -> None:
    """safetensors' save_file, its I/O failures (a full disk) raised as OSError for the atomic writer to report."""
    try:
        with utf8_path(tmp) as name:  # a temporary's own name is UTF-8
            save_file(dict(tensors), name, None if metadata is None else dict(metadata))
    except SafetensorError as err:
        raise OSError(str(err)) from err


class _WriteRecorder:
    """A binary file for torch.save that keeps the first write error: torch reports a short write only as
    'unexpected pos N vs M', the OSError behind it (ENOSPC, EFBIG) lost."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def save_torch(obj: Any, tmp: Path) -> None:
    """torch.save (a weights-only .pt), its write failures (a full disk) raised as the OSError behind them for the
    atomic writer to report."""
    recorder = _WriteRecorder(open(tmp, "wb"))  # noqa: SIM115 (closed below, where a failed flush is reported too)
    try:
        try:
            torch.save(obj, recorder)
        finally:
            recorder.file.close()
    except OSError as err:
        if recorder.error is None or recorder.error is err:
            raise
        raise OSError(recorder.error.errno, recorder.error.strerror) from err
    except RuntimeError as err:
        if recorder.error is not None:
            raise OSError(recorder.error.errno, recorder.error.strerror) from err
        if "write" in str(err).lower() or "unexpected pos" in str(err):
            raise OSError(str(err).splitlines()[0]) from err
        raise
