"""Reading checkpoints that revzoo did not write (safetensors, sharded or not, and PyTorch files) without pickle."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ._io import SAFETENSORS_SUFFIX, require_file
from ._shards import is_index, open_tensors

__all__ = ["TORCH_SUFFIXES", "read_foreign", "tensor_items"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pyth")  # .pyth: SlowFast's (PySlowFast) weights
MAX_INFLATION = 2  # how many times its own size a .pt zip may declare uncompressed
EXPANSION_MARGIN = 1 << 16  # objects a .pt's containers may reach beyond one per byte of the file
MAX_NESTING = 100  # containers in containers (a checkpoint nests a few deep; repr and json recurse)


def read_foreign(path: str | os.PathLike) -> Any:
    """Returns a foreign checkpoint's content, read without executing pickled code.

    `.safetensors` (or a sharded `model.safetensors.index.json`) gives a dict of tensors;
    `.pt/.pth/.bin/.ckpt/.pyth` go through `torch.load(weights_only=True)`, which refuses anything
    but tensors and plain containers.
    """
    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX or is_index(path):
        with open_tensors(path) as (_, source):
            return {key: source.get(key) for key in source.shapes}
    if suffix in TORCH_SUFFIXES:
        _check_declared_sizes(path)
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{path}: refused: it holds pickled objects other than tensors and plain containers, "
                "and revzoo never unpickles code (torch.load weights_only=True)"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({str(err).splitlines()[0]})") from err
        _check_expansion(path, content)
        return content
    raise CheckpointError(
        f"{path}: refused: unknown file type {suffix or '(none)'!r}; revzoo reads {SAFETENSORS_SUFFIX} and, "
        f"without unpickling code, {', '.join(TORCH_SUFFIXES)}"
    )


def _check_declared_sizes(path: Path) -> None:
    """Refuses a zip whose entries would inflate far beyond the file before torch.load reads them.

    torch.save stores its entries uncompressed, so a real checkpoint declares about its own
    size; a deflated entry of zeros declares a thousand times more (a zip bomb). The
    declared sizes bound what torch's reader allocates, so checking them bounds its memory.
    """
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch file (a damaged zip: {err})") from err
    if declared > MAX_INFLATION * size + (1 << 20):
        raise CheckpointError(
            f"{path}: refused: its zip entries declare {declared:,} bytes in a file of {size:,} bytes; torch.save "
            "never compresses, so this is not a plain checkpoint (a zip bomb?)"
        )


def _check_expansion(path: Path, content: Any) -> None:
    """Refuses content that holds more objects, counted each time a container reaches them, than the file's bytes
    could store one by one, or that nests deeper than MAX_NESTING.

    Pickle stores an object reached twice once, and a reference to it in two bytes, so a list of ten references
    to a list of ten references to ... ("billion laughs") is a few hundred bytes for 10**30 items: whatever walks
    it (a repr, json.dumps of a scheduler state) never ends. A real checkpoint's containers reach each object
    about once, so a budget of the file's size (plus a margin) bounds every later walk by the bytes stored.
    """
    budget = path.stat().st_size + EXPANSION_MARGIN
    reached, pending = 0, [(content, 0)]
    while pending:
        obj, depth = pending.pop()
        reached += 1
        if reached > budget:
            raise CheckpointError(
                f"{path}: refused: its containers reach more than {budget:,} objects in a file of "
                f"{path.stat().st_size:,} bytes, through shared references (a 'billion laughs' file?); a checkpoint's "
                "containers reach each object about once"
            )
        if depth > MAX_NESTING:
            raise CheckpointError(f"{path}: refused: its containers nest more than {MAX_NESTING} deep")
        if isinstance(obj, Mapping):
            pending.extend((item, depth + 1) for pair in obj.items() for item in pair)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            pending.extend((item, depth + 1) for item in obj)


def tensor_items(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Returns the tensors of a flat state dict, refusing anything that is not one."""
    bad = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"expected a state dict of tensors; {len(bad)} entries are not tensors: {bad[:3]}")
    return dict(obj)
