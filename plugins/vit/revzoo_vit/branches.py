"""The two residual branches of a timm `Block`, as the (f, g) pair of a reversible block.

timm's `Block.forward` is `x = x + drop_path1(ls1(attn(norm1(x))))` then
`x = x + drop_path2(ls2(mlp(norm2(x))))`. Each branch below holds the Block's own
submodules under the Block's own attribute names, so `f.attn.qkv.weight` is the very
tensor timm calls `blocks.{i}.attn.qkv.weight`: no copy, and a 1:1 key map.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

__all__ = [
    "ATTENTION_PARTS", "MASK_ROUTES", "MLP_PARTS", "PAIRED_ROUTES", "SUPPORTED_TIMM",
    "AttentionBranch", "MlpBranch", "accepts_attention_mask",
]

ATTENTION_PARTS = ("norm1", "attn", "ls1", "drop_path1")
MLP_PARTS = ("norm2", "mlp", "ls2", "drop_path2")
MASK_ROUTES = {"attn_mask": "f", "is_causal": "f"}  # the mask reaches the attention branch only
PAIRED_ROUTES = {"paired": "both"}  # the paper's RevViT: the per-call branch arithmetic (see revvit.py), to f and g
# What splits into (f, g) pairs, said in every refusal and in the README.
SUPPORTED_TIMM = (
    "revzoo wraps exactly one timm class, timm.models.vision_transformer.VisionTransformer with pre-norm `Block`s "
    "(the vit_* models, non-distilled deit_*, the hybrid vit_*_r50/resnet models); it refuses Eva (EVA-02, the rope "
    "ViTs, PE-core), Beit, VisionTransformerRelPos, VisionTransformerDistilled (distilled DeiT), NaFlexVit, and "
    "VisionTransformers built with ResPostBlock, ParallelScalingBlock, DiffParallelScalingBlock or ParallelThingsBlock"
)


def accepts_attention_mask(attention: nn.Module) -> bool:
    """Returns whether this timm attention module's forward takes `attn_mask` (recent timm, e.g. 1.0.31, does)."""
    return "attn_mask" in inspect.signature(attention.forward).parameters


class AttentionBranch(nn.Module):
    """f: `drop_path1(ls1(attn(norm1(x))))`, with an optional attention mask routed to it."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for name in ATTENTION_PARTS:
            setattr(self, name, getattr(block, name))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        # Only pass what was given, so attention modules without mask support still run.
        mask_kwargs = {}
        if attn_mask is not None:
            mask_kwargs["attn_mask"] = attn_mask
        if is_causal:
            mask_kwargs["is_causal"] = True
        return self.drop_path1(self.ls1(self.attn(self.norm1(x), **mask_kwargs)))


class MlpBranch(nn.Module):
    """g: `drop_path2(ls2(mlp(norm2(x))))`."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for name in MLP_PARTS:
            setattr(self, name, getattr(block, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
