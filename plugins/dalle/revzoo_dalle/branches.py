"""The residual branches `f` (attention) and `g` (feed-forward) of one DALL-E transformer layer.

Each branch is upstream's LayerScale(PreNorm(shift(fn))): layer norm, optional token
shift, the shared-or-own inner module, optional sandwich norm, and a learned per-channel
scale. Norms, scales and shift state are per layer even when the inner module is shared.
Both read and write the generation cache (a dict with an "offset" entry) under their own key.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .shift import shift_tokens

__all__ = ["AttentionBranch", "FeedForward", "FeedForwardBranch", "layer_scale_init"]


def layer_scale_init(layer_number: int) -> float:
    """Upstream's initial LayerScale value (arXiv:2103.17239) for the 1-based layer number."""
    if layer_number <= 18:
        return 0.1
    if layer_number <= 24:
        return 1e-5
    return 1e-6


class FeedForward(nn.Module):
    """GEGLU feed-forward: Linear(dim, 2 * mult * dim), x * gelu(gate), dropout, Linear back to dim."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, gates = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(values * F.gelu(gates)))


class _Branch(nn.Module):
    """Norm, token shift, then `fn`; sandwich norm and LayerScale on the way out."""

    def __init__(
        self,
        dim: int,
        fn: nn.Module,
        *,
        name: str,
        layer_number: int,
        sandwich_norm: bool,
        shift: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn
        self.norm_out = nn.LayerNorm(dim) if sandwich_norm else nn.Identity()
        self.scale = nn.Parameter(torch.full((1, 1, dim), layer_scale_init(layer_number)))
        self.name = name
        self.shift = shift  # (text_len, image_size) or None

    def extra_repr(self) -> str:
        return f"name={self.name!r}, shift={self.shift is not None}"

    def _enter(self, x: torch.Tensor, cache: dict[str, Any] | None) -> tuple[torch.Tensor, int]:
        offset = 0 if cache is None else cache.get("offset", 0)
        x = self.norm(x)
        if self.shift is not None:
            text_len, image_size = self.shift
            key = f"shift_{self.name}"
            history = None if cache is None or offset == 0 else cache[key]
            shifted = shift_tokens(x, history, offset, text_len, image_size)
            if cache is not None:
                window = x if history is None else torch.cat((history, x), dim=1)
                cache[key] = window[:, -image_size:]
            x = shifted
        return x, offset

    def _leave(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm_out(y) * self.scale


class AttentionBranch(_Branch):
    """`f` of a layer: attention; takes the routed `mask`, `rotary_pos_emb` and `cache`."""

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        rotary_pos_emb: torch.Tensor | None = None,
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        x, offset = self._enter(x, cache)
        past = cache.get(self.name) if cache is not None and offset > 0 else None
        y, keys_values = self.fn(x, offset=offset, key_mask=mask, rotary_pos_emb=rotary_pos_emb, past=past)
        if cache is not None:
            cache[self.name] = keys_values
        return self._leave(y)


class FeedForwardBranch(_Branch):
    """`g` of a layer: the feed-forward; takes the routed `cache` (for the token shift only)."""

    def forward(self, x: torch.Tensor, *, cache: dict[str, Any] | None = None) -> torch.Tensor:
        x, _ = self._enter(x, cache)
        return self._leave(self.fn(x))

