"""RevViT: a timm VisionTransformer whose blocks run through revzoo.ReversibleSequence.

Everything outside the blocks is timm's own: the modules and parameters are the wrapped
model's objects, and `_pos_embed`, `pool`, `forward_head`, `get_classifier`,
`reset_classifier` and `no_weight_decay` are timm's methods, reused as they are (they
read only attributes that RevViT carries over). Each timm `Block` becomes one reversible
block `(f, g)` = (`AttentionBranch`, `MlpBranch`), which reference the Block's own
submodules. The sequential form therefore computes exactly timm's function.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

import revzoo

from .branches import MASK_ROUTES, SUPPORTED_TIMM, AttentionBranch, MlpBranch, accepts_attention_mask

__all__ = ["MASK_ROUTES", "STACK_PREFIX", "TIMM_ATTRIBUTES", "TIMM_MODULES", "RevViT", "check_supported_vit"]

# Modules and parameters of timm's VisionTransformer that RevViT reuses (the same objects),
# before and after the blocks, so that RevViT's state dict lists keys in timm's order.
TIMM_STEM = ("cls_token", "reg_token", "pos_embed", "patch_embed", "pos_drop", "patch_drop", "norm_pre")
TIMM_TAIL = ("norm", "attn_pool", "fc_norm", "head_drop", "head")
TIMM_MODULES = TIMM_STEM + TIMM_TAIL
# Plain attributes timm's reused methods read, and timm's metadata (pretrained_cfg, recorded args).
TIMM_ATTRIBUTES = (
    "num_classes", "in_chans", "global_pool", "num_features", "head_hidden_size", "embed_dim",
    "num_prefix_tokens", "num_reg_tokens", "has_class_token", "no_embed_class", "pool_include_prefix",
    "dynamic_img_size", "pretrained_cfg", "default_cfg", "pretrained_model_args", "_model_args", "_traits",
)
# Where the blocks live in RevViT's state dict: the stack attribute, then the engine's `blocks.{i}.f|g`.
STACK_PREFIX = "blocks.blocks."


def check_supported_vit(vit: nn.Module) -> None:
    """Raises revzoo.ConfigError unless `vit` is a plain timm VisionTransformer of pre-norm `Block`s."""
    if type(vit) is not VisionTransformer:
        raise revzoo.ConfigError(f"got a timm {type(vit).__name__}: {SUPPORTED_TIMM} (e.g. 'vit_small_patch16_224')")
    for index, block in enumerate(vit.blocks):
        if not isinstance(block, Block) or type(block).forward is not Block.forward:
            raise revzoo.ConfigError(
                f"block {index} is a {type(block).__name__}; only timm's pre-norm Block "
                f"(x + attn(norm1(x)), then x + mlp(norm2(x))) splits into a reversible (f, g) pair: {SUPPORTED_TIMM}"
            )


class RevViT(revzoo.ZooModel):
    """A timm VisionTransformer run by a revzoo.ReversibleSequence, with timm's interface.

    Args:
        vit: the timm model to wrap; RevViT shares its modules and parameters (no copy).
        form: "reversible" or "sequential" (sequential is exactly timm's function).
        execution: "invert" (memory-free backward) or "autograd" (the gradient reference).
    """

    def __init__(self, vit: VisionTransformer, *, form: str = "reversible", execution: str = "invert") -> None:
        super().__init__()
        check_supported_vit(vit)
        for name in TIMM_ATTRIBUTES:
            if hasattr(vit, name):
                setattr(self, name, getattr(vit, name))
        for name in TIMM_STEM:
            setattr(self, name, getattr(vit, name))
        self.supports_attn_mask = len(vit.blocks) > 0 and accepts_attention_mask(vit.blocks[0].attn)
        self.blocks = revzoo.ReversibleSequence(
            [(AttentionBranch(block), MlpBranch(block)) for block in vit.blocks],
            routes=MASK_ROUTES,  # a timm without attn_mask is refused in forward_features, not here
            form=form,
            execution=execution,
        )
        for name in TIMM_TAIL:
            setattr(self, name, getattr(vit, name))
        # The wrapped model, not a submodule (its tensors are ours already): to_timm hands it back.
        object.__setattr__(self, "timm_model", vit)

    # timm's own code, reused unchanged.
    _pos_embed = VisionTransformer._pos_embed
    pool = VisionTransformer.pool
    forward_head = VisionTransformer.forward_head
    get_classifier = VisionTransformer.get_classifier
    no_weight_decay = VisionTransformer.no_weight_decay

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """timm's reset_classifier; also records the change in revzoo_config so revzoo.save/load rebuild it."""
        VisionTransformer.reset_classifier(self, num_classes, global_pool)
        config = getattr(self, "revzoo_config", None)
        if config is not None:
            config["num_classes"] = num_classes
            if global_pool is not None:
                config["global_pool"] = global_pool
                config["fc_norm"] = not isinstance(self.fc_norm, nn.Identity)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's layer-decay / param-group regexes, for RevViT's key layout."""
        return dict(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
            blocks=[(r"^blocks\.blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    def forward_features(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Embeddings, the reversible stack, final norm: timm's forward_features with the blocks swapped."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        mask_kwargs: dict[str, Any] = {}
        if attn_mask is not None:
            mask_kwargs["attn_mask"] = attn_mask
        if is_causal:
            mask_kwargs["is_causal"] = True
        if mask_kwargs and not self.supports_attn_mask:
            raise TypeError("this timm version's Attention takes no attn_mask/is_causal; upgrade timm (1.0.31 does)")
        x = self.blocks(x, **mask_kwargs)
        return self.norm(x)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.forward_head(x)

    def branches(self) -> list[tuple[AttentionBranch, MlpBranch]]:
        """Returns the (f, g) pair of every block, in order."""
        return [(block.f, block.g) for block in self.blocks.blocks]

