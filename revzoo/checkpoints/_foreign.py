"""Reading checkpoints that revzoo did not write (safetensors, sharded or not, and PyTorch files) without pickle."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CheckpointError
from ._io import SAFETENSORS_SUFFIX, require_file
from ._shards import is_index, open_tensors

__all__ = ["TORCH_SUFFIXES", "read_foreign", "tensor_items"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_foreign(path: str | os.PathLike) -> Any:
    """Returns a foreign checkpoint's content, read without executing pickled code.

    `.safetensors` (or a sharded `model.safetensors.index.json`) gives a dict of tensors;
    `.pt/.pth/.bin/.ckpt` go through `torch.load(weights_only=True)`, which refuses anything
    but tensors and plain containers.
    """
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


def tensor_items(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Returns the tensors of a flat state dict, refusing anything that is not one."""
    bad = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"expected a state dict of tensors; {len(bad)} entries are not tensors: {bad[:3]}")
    return dict(obj)
