"""Which keys each query may see, for DALL-E's attention types, as boolean masks.

Every type is causal. `full` sees all earlier positions. The sparse types let text see
earlier text, and let an image token see all the text plus a causal part of the image
grid: its row (`axial_row`), its column (`axial_col`) or a dilated window above and to
the left of it (`conv_like`). Upstream computes these patterns with gathers over a
padded grid; as masks they are the same function and work with a key/value cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ATTENTION_TYPES", "AttentionPattern"]

ATTENTION_TYPES: tuple[str, ...] = ("full", "axial_row", "axial_col", "conv_like")


@dataclass(frozen=True)
class AttentionPattern:
    """The key pattern of one attention type over a sequence of `text_len` text tokens then an image grid."""

    kind: str
    text_len: int
    image_size: int
    kernel_size: int = 5
    dilation: int = 1

    def mask(self, offset: int, num_queries: int, num_keys: int, device: torch.device) -> torch.Tensor:
        """Returns allowed[query, key] for queries at positions offset.. and keys at positions 0.."""
        query = torch.arange(offset, offset + num_queries, device=device)[:, None]
        key = torch.arange(num_keys, device=device)[None, :]
        causal = key <= query
        if self.kind == "full":
            return causal
        query_image = query - self.text_len
        key_image = key - self.text_len
        size = self.image_size
        row_step = torch.div(query_image, size, rounding_mode="floor") - torch.div(key_image, size, rounding_mode="floor")
        col_step = query_image % size - key_image % size
        if self.kind == "axial_row":
            grid = row_step == 0
        elif self.kind == "axial_col":
            grid = col_step == 0
        else:
            reach = (self.kernel_size - 1) * self.dilation
            grid = (
                (row_step >= 0) & (row_step <= reach) & (row_step % self.dilation == 0)
                & (col_step >= 0) & (col_step <= reach) & (col_step % self.dilation == 0)
            )
        key_is_text = key < self.text_len
        query_is_text = query < self.text_len
        return causal & (key_is_text | (~query_is_text & grid))
