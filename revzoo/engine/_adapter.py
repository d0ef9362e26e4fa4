"""The adapter a preserving conversion couples with each pretrained block: it starts as the zero function."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BottleneckAdapter"]


class BottleneckAdapter(nn.Module):
    """`up(gelu(down(norm(x))))` with `up` initialised to zero, so the adapter adds nothing until trained.

    The `G` of MEFT's coupling (Liao et al., NeurIPS 2023): a zero `G` keeps a converted stack's
    function that of the pretrained blocks, while its gradients are not zero, so it learns.

    Args:
        width: the stream's last dimension.
        dim: the bottleneck's width.
    """

    def __init__(
        self, width: int, dim: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        for name, value in (("width", width), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"adapter {name} must be a positive integer, got {value!r}")
        options = {"device": device, "dtype": dtype}
        self.width, self.dim = width, dim
        self.norm = nn.LayerNorm(width, **options)
        self.down = nn.Linear(width, dim, **options)
        self.up = nn.Linear(dim, width, **options)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.gelu(self.down(self.norm(x))))
