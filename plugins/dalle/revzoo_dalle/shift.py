"""Token shifting (DALLE-pytorch's `shift_tokens`): mix a token's neighbours into its features.

Text tokens take the first half of their features from the previous token. Image tokens
take the first quarter from the token above and the second quarter from the token to the
left (zeros on the top row / left column); the rest passes through. Channel groups follow
`torch.chunk`, as upstream does, so odd widths split the same way.
"""

from __future__ import annotations

import math

import torch

__all__ = ["shift_tokens"]


def _source(positions: torch.Tensor, text_len: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns, per position, the position of the first and of the second shifted channel group (-1: zeros)."""
    image = positions - text_len
    is_text = image < 0
    previous = torch.where(positions >= 1, positions - 1, -1)
    above = torch.where(image >= image_size, positions - image_size, -1)
    left = torch.where(image % image_size != 0, positions - 1, -1)
    return torch.where(is_text, previous, above), torch.where(is_text, previous, left)


def _shift_one_image_token(x: torch.Tensor, history: torch.Tensor, index: int, image_size: int) -> torch.Tensor:
    """The cached-generation case: one image token below the first row, its neighbours in `history`."""
    quarter = math.ceil(x.shape[-1] / 4)
    above = history[:, -image_size, :quarter]
    left = history[:, -1, quarter : 2 * quarter]
    if index % image_size == 0:
        left = torch.zeros_like(left)
    return torch.cat((above, left, x[:, 0, 2 * quarter :]), dim=-1)[:, None]


def shift_tokens(
    x: torch.Tensor, history: torch.Tensor | None, offset: int, text_len: int, image_size: int
) -> torch.Tensor:
    """Shifts `x` (batch, n, dim), whose tokens sit at positions offset.., given `history`,

    the (batch, h, dim) tokens just before them (h >= image_size when offset is in the image,
    None or empty when offset is 0).
    """
    batch, length, dim = x.shape
    past = 0 if history is None else history.shape[1]
    if past == 0 and offset == 0 and length < text_len:  # a text prefix alone (generate_texts): upstream does not shift
        return x
    if length == 1 and offset >= text_len + image_size and past >= image_size:
        return _shift_one_image_token(x, history, offset - text_len, image_size)
    window = x if past == 0 else torch.cat((history, x), dim=1)
    base = offset - past
    positions = torch.arange(offset, offset + length, device=x.device)
    first_source, second_source = _source(positions, text_len, image_size)

    half, quarter = math.ceil(dim / 2), math.ceil(dim / 4)
    is_text = (positions < text_len)[:, None]
    channels = torch.arange(dim, device=x.device)[None, :]
    in_first = torch.where(is_text, channels < half, channels < quarter)
    in_second = ~is_text & (channels >= quarter) & (channels < 2 * quarter)
    source = torch.where(in_first, first_source[:, None], torch.where(in_second, second_source[:, None], positions[:, None]))

    valid = source >= base
    index = (source - base).clamp(min=0)
    gathered = window.gather(1, index[None].expand(batch, -1, -1))
    return torch.where(valid[None], gathered, gathered.new_zeros(()))
