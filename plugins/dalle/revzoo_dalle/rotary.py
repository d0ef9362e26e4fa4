"""Rotary position tables of DALLE-pytorch: 1-d text positions plus 2-d (axial) image positions.

Upstream rotates q, k *and* v by one table whose last dimension has three equal parts:
text frequencies (text positions 0..n, image tokens all at position 8192, far from the
text) and two pixel-frequency parts for the image row and column (positions on
[-1, 1]; text tokens sit at -10, outside that range).
"""

from __future__ import annotations

import math

import torch

__all__ = ["apply_rotary", "dalle_rotary_table", "rotary_width"]

_TEXT_THETA = 10000.0
_PIXEL_MAX_FREQ = 10.0
_IMAGE_TEXT_POSITION = 8192.0
_TEXT_PIXEL_POSITION = -10.0


def rotary_width(dim_head: int) -> int:
    """Returns how many of the `dim_head` features the table rotates (0 if too small to rotate any)."""
    return 3 * 2 * ((dim_head // 3) // 2)


def _angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Positions (n,) times frequencies (f,), each angle repeated for the feature pair it rotates."""
    return (positions.float()[:, None] * freqs[None, :]).repeat_interleave(2, dim=-1)


def dalle_rotary_table(dim_head: int, text_len: int, image_size: int) -> torch.Tensor:
    """Returns the angle table of shape (1, text_len + image_size**2, rotary_width(dim_head)).

    `text_len` counts the <bos> token; rows are sequence positions.
    """
    part = dim_head // 3
    text_freqs = 1.0 / (_TEXT_THETA ** (torch.arange(0, part, 2)[: part // 2].float() / part))
    pixel_freqs = torch.linspace(1.0, _PIXEL_MAX_FREQ / 2, part // 2) * math.pi
    image_len = image_size**2

    text_positions = torch.cat((torch.arange(text_len), torch.full((image_len,), _IMAGE_TEXT_POSITION)))
    text_part = _angles(text_positions, text_freqs)

    axis = _angles(torch.linspace(-1.0, 1.0, steps=image_size), pixel_freqs)
    rows = axis[:, None, :].expand(image_size, image_size, -1)
    cols = axis[None, :, :].expand(image_size, image_size, -1)
    image_axial = torch.cat((rows, cols), dim=-1).reshape(image_len, -1)
    text_axial = _angles(torch.full((text_len,), _TEXT_PIXEL_POSITION), pixel_freqs).repeat(1, 2)
    axial_part = torch.cat((text_axial, image_axial), dim=0)

    return torch.cat((text_part, axial_part), dim=-1)[None]


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Maps each feature pair (a, b) to (-b, a)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(angles: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rotates the first `angles.shape[-1]` features of each tensor (..., n, d) by `angles` (..., n, r)."""
    width = angles.shape[-1]
    angles = angles.to(tensors[0].dtype)
    cos, sin = angles.cos(), angles.sin()
    return tuple(
        torch.cat((x[..., :width] * cos + _rotate_pairs(x[..., :width]) * sin, x[..., width:]), dim=-1)
        for x in tensors
    )
