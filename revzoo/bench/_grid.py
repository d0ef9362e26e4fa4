"""Writing generated images as one grid picture, atomically, as `revzoo generate` does."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints._io import check_output
from ..checkpoints._write import atomic_write
from ..errors import RevzooError

__all__ = ["check_grid_path", "save_grid"]

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def check_grid_path(path: str | os.PathLike, src: str | os.PathLike, overwrite: bool) -> None:
    """Refuses an unknown image type, the input file, or an existing file without `overwrite` (before any work)."""
    if Path(path).suffix.lower() not in _FORMATS:
        raise RevzooError(f"{str(path)!r}: unknown image type; use one of {', '.join(_FORMATS)}")
    check_output(src, path, overwrite)


def save_grid(images: torch.Tensor, path: str | os.PathLike, *, columns: int) -> Path:
    """Writes `images` (n, channels, h, w) as a grid of `columns`, atomically; returns the path.

    Each image is scaled by its own minimum and maximum, as DALLE-pytorch's generate.py
    saves its images, so decoders with any output range give visible pictures.
    """
    from torchvision.utils import save_image

    path = Path(path)
    image_format = _FORMATS[path.suffix.lower()]
    images = images.detach().float().cpu()
    return atomic_write(path, lambda tmp: save_image(images, tmp, nrow=columns, padding=2, normalize=True,
                                                     scale_each=True, format=image_format))
