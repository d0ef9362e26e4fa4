"""Multi-head attention of the DALL-E transformer, with a key/value cache for generation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .patterns import AttentionPattern
from .rotary import apply_rotary

__all__ = ["Attention", "stable_softmax"]


def stable_softmax(scores: torch.Tensor, dim: int = -1, alpha: float = 32.0**2) -> torch.Tensor:
    """Softmax with upstream's `stable` rescaling (arXiv:2105.13290): the max is taken on scores / alpha."""
    scores = scores / alpha
    scores = scores - scores.amax(dim=dim, keepdim=True).detach()
    return (scores * alpha).softmax(dim=dim)


class Attention(nn.Module):
    """Causal attention over one `AttentionPattern`; q, k and v are all rotated when a table is given.

    Uses `F.scaled_dot_product_attention` unless `stable` asks for upstream's rescaled softmax.
    """

    def __init__(
        self,
        dim: int,
        *,
        pattern: AttentionPattern,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        stable: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.pattern = pattern
        self.heads = heads
        self.scale = dim_head**-0.5
        self.stable = stable
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"kind={self.pattern.kind!r}, heads={self.heads}, stable={self.stable}"

    def forward(
        self,
        x: torch.Tensor,
        *,
        offset: int = 0,
        key_mask: torch.Tensor | None = None,
        rotary_pos_emb: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns the output for `x` (tokens at positions offset..) and the keys/values seen so far.

        `key_mask` (batch, keys) marks keys that may be attended (all keys, cached ones included).
        """
        length = x.shape[1]
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        if rotary_pos_emb is not None:
            angles = rotary_pos_emb[:, None, offset : offset + length]
            q, k, v = apply_rotary(angles, q, k, v)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=-2), torch.cat((past[1], v), dim=-2)

        num_keys = k.shape[-2]
        plain_causal = self.pattern.kind == "full" and key_mask is None and (length == 1 or num_keys == length)
        if plain_causal:  # no mask tensor: SDPA's is_causal, or one query that sees every key
            out = self._attend(q, k, v, None, is_causal=length > 1)
        else:
            allowed = self.pattern.mask(offset, length, num_keys, x.device)
            if key_mask is not None:
                allowed = allowed & key_mask.bool()[:, None, None, :]
            out = self._attend(q, k, v, allowed, is_causal=False)
        out = out.transpose(1, 2).flatten(-2)
        return self.dropout(self.to_out(out)), (k, v)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, *, is_causal: bool
    ) -> torch.Tensor:
        if not self.stable:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=is_causal, scale=self.scale)
        scores = (q * self.scale) @ k.transpose(-1, -2)
        if is_causal:
            allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        if allowed is not None:
            scores = scores.masked_fill(~allowed, -torch.finfo(scores.dtype).max)
        return stable_softmax(scores, dim=-1) @ v
