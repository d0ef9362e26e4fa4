"""The two residual branches of a Lie-transformer block: local Lie self-attention (f) and a
feed-forward network (g). Each returns only its branch; the engine adds the residual.
"""

from __future__ import annotations

import torch
from torch import nn

from .neighbourhood import gather_elements


class LocationKernel(nn.Module):
    """MLP scoring a (query, key) pair from its Lie-algebra coordinates and edge features.

    The score is shared by all heads and added to the content logits, so attention depends on
    where the key sits relative to the query (in the query's own frame) as well as on content.
    """

    def __init__(self, in_features: int, *, hidden_mult: int = 4) -> None:
        super().__init__()
        hidden = in_features * hidden_mult
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, pairs: torch.Tensor, edges: torch.Tensor | None) -> torch.Tensor:
        features = pairs if edges is None else torch.cat((pairs, edges), dim=-1)
        return self.net(features).squeeze(-1)


class LieSelfAttention(nn.Module):
    """Multi-head attention of each lifted element over its neighbourhood.

    Logits are ``q . k / sqrt(dim_head) + kernel(log(u^-1 v), edge)``; both terms are invariant
    when the whole cloud (with its lift samples) moves by a group element, so the layer is
    equivariant.
    """

    def __init__(self, dim: int, *, heads: int, dim_head: int, pair_dim: int, edge_dim: int = 0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.location_kernel = LocationKernel(pair_dim + edge_dim)

    def forward(
        self,
        values: torch.Tensor,
        *,
        coords: torch.Tensor,
        edges: torch.Tensor | None,
        neighbour_index: torch.Tensor,
        neighbour_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Returns the attended values ``(batch, elements, dim)``.

        Args:
            values: ``(batch, elements, dim)``.
            coords: neighbour pair coordinates ``(batch, elements, k, pair_dim)``.
            edges: neighbour edge features ``(batch, elements, k, edge_dim)`` or None.
            neighbour_index: ``(batch, elements, k)`` key indices.
            neighbour_mask: ``(batch, elements, k)``, False for slots that are not neighbours.
        """
        batch, count, _ = values.shape
        query = self.to_q(values).unflatten(-1, (self.heads, -1))
        key = gather_elements(self.to_k(values), neighbour_index).unflatten(-1, (self.heads, -1))
        value = gather_elements(self.to_v(values), neighbour_index).unflatten(-1, (self.heads, -1))
        logits = torch.einsum("bihd,bijhd->bhij", query, key) * self.scale
        logits = logits + self.location_kernel(coords, edges)[:, None]
        logits = logits.masked_fill(~neighbour_mask[:, None], torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1)
        out = torch.einsum("bhij,bijhd->bihd", weights, value)
        return self.to_out(out.flatten(-2))


class AttentionBranch(nn.Module):
    """Pre-norm Lie self-attention: the f of a block.

    The element ``mask`` arrives as stream-layout context; padding is already excluded by
    ``neighbour_mask`` (padded elements are never neighbours), so it is not needed here.
    """

    def __init__(self, dim: int, attention: LieSelfAttention) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = attention

    def forward(
        self,
        values: torch.Tensor,
        *,
        coords: torch.Tensor,
        mask: torch.Tensor,
        edges: torch.Tensor | None,
        neighbour_index: torch.Tensor,
        neighbour_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.attention(
            self.norm(values),
            coords=coords,
            edges=edges,
            neighbour_index=neighbour_index,
            neighbour_mask=neighbour_mask,
        )


class FeedForward(nn.Module):
    """Pre-norm position-wise MLP: the g of a block."""

    def __init__(self, dim: int, *, mult: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.act(self.proj_in(self.norm(values))))
