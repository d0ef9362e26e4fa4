"""The DALL-E transformer: attention/feed-forward layers on one revzoo.ReversibleSequence."""

from __future__ import annotations

from itertools import cycle, islice
from typing import Any

import torch
from torch import nn

import revzoo

from .attention import Attention
from .branches import AttentionBranch, FeedForward, FeedForwardBranch
from .patterns import AttentionPattern
from .rotary import dalle_rotary_table

__all__ = ["ROUTES", "DalleTransformer"]

ROUTES: dict[str, str] = {"mask": "f", "rotary_pos_emb": "f", "cache": "both"}


class DalleTransformer(nn.Module):
    """Causal transformer over `text_len` text positions (with <bos>) then an image grid.

    Attention types cycle over depth; layers with equal `shared_attn_ids` / `shared_ff_ids`
    share their inner attention / feed-forward module (not their norms or scales). The
    rotary table is a derived, non-persistent buffer.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        text_len: int,
        image_size: int,
        form: str = "reversible",
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        attn_types: tuple[str, ...] = ("full",),
        conv_kernel_size: int = 5,
        conv_dilation: int = 1,
        stable: bool = False,
        sandwich_norm: bool = False,
        shift_tokens: bool = False,
        rotary_emb: bool = True,
        shared_attn_ids: tuple[Any, ...] | None = None,
        shared_ff_ids: tuple[Any, ...] | None = None,
    ) -> None:
        super().__init__()
        self.text_len = text_len
        self.image_size = image_size
        # lazily, layer by layer: a checkpoint may claim depth=10**9, and revzoo's build budget stops that early
        kinds = islice(cycle(attn_types), depth)
        attn_ids = islice(cycle(shared_attn_ids or range(depth)), depth)
        ff_ids = islice(cycle(shared_ff_ids or range(depth)), depth)
        shift = (text_len, image_size) if shift_tokens else None
        attentions: dict[Any, Attention] = {}
        feedforwards: dict[Any, FeedForward] = {}
        blocks = []
        for index, (kind, attn_id, ff_id) in enumerate(zip(kinds, attn_ids, ff_ids)):
            attention = attentions.get(attn_id)
            if attention is None:
                pattern = AttentionPattern(kind, text_len, image_size, conv_kernel_size, conv_dilation)
                attention = Attention(
                    dim, pattern=pattern, heads=heads, dim_head=dim_head, dropout=attn_dropout, stable=stable
                )
                attentions[attn_id] = attention
            elif attention.pattern.kind != kind:
                raise revzoo.ConfigError(
                    f"shared_attn_ids gives layer {index} ({kind!r}) the attention of an earlier "
                    f"{attention.pattern.kind!r} layer (id {attn_id!r}); shared layers need equal attn_types"
                )
            feedforward = feedforwards.get(ff_id)
            if feedforward is None:
                feedforward = feedforwards[ff_id] = FeedForward(dim, mult=ff_mult, dropout=ff_dropout)
            common = {"layer_number": index + 1, "sandwich_norm": sandwich_norm, "shift": shift}
            blocks.append((
                AttentionBranch(dim, attention, name=f"attn_{index}", **common),
                FeedForwardBranch(dim, feedforward, name=f"ff_{index}", **common),
            ))
        self.layers = revzoo.ReversibleSequence(blocks, routes=ROUTES, form=form)
        table = dalle_rotary_table(dim_head, text_len, image_size) if rotary_emb else None
        self.register_buffer("rotary_pos_emb", table, persistent=False)

    def forward(
        self, x: torch.Tensor, *, mask: torch.Tensor | None = None, cache: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Runs the layers on embedded tokens `x` (batch, n, dim) at positions cache["offset"].. ."""
        kwargs: dict[str, Any] = {}
        if mask is not None:
            kwargs["mask"] = mask
        if cache is not None:
            kwargs["cache"] = cache
        if self.rotary_pos_emb is not None:
            kwargs["rotary_pos_emb"] = self.rotary_pos_emb
        return self.layers(x, **kwargs)
