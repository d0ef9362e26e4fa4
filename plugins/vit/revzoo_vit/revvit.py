"""PaperRevViT: the Reversible Vision Transformer of Mangalam et al. (CVPR 2022), as SlowFast and mmpretrain build it.

Patch embedding plus a learned position embedding (no class token), a stack of reversible
blocks `Y1 = X1 + F(X2)`, `Y2 = X2 + G(Y1)` started as `(x, x)`, then the two streams
concatenated, a LayerNorm over the doubled width, the mean over tokens and a linear head.
F is pre-norm attention and G a pre-norm MLP, timm's `Attention` and `Mlp` (so `f.attn.qkv`
and `g.mlp.fc1` are timm's layouts, and `revzoo_vit.AttentionBranch`/`MlpBranch` compute them).

The engine's reversible form outputs the mean of its two streams, from which the two streams
cannot be told apart. So the stack runs on the streams side by side, `z = [x1, x2]` of twice the
width, and each branch reads and writes one half (`PairedAttention`, `PairedMlp`):

    paired (the paper's coupling):  f([a, b]) = [F(b), 0]     g([a, b]) = [0, G(a)]

Started as `([x, x], [x, x])`, the engine's streams stay `s1 = [X1, x]`, `s2 = [x, X2]`: the
halves the branches never write keep `x` exactly (adding 0 and subtracting it are exact), so
`2 * mean(s1, s2) - [x, x] = [X1, X2]`, and inversion recomputes X1 and X2 as the paper does.

With any other function of the same parameters the two halves hold one stream:

    tied (the sequential form; other couplings):  f(z) = [F(m), F(m)], g(z) = [G(m), G(m)], m = mean of the halves

so the sequential form is the plain ViT `x = x + F(x)`, `x = x + G(x)` whose head sees `[x, x]`,
and a coupling set by `revzoo.reversibilize` (adapters, scales, swap) couples whole sequential
blocks as it does for every family. The model chooses per call from its stack's form and coupling
and passes the choice to the branches as the keyword `paired` (routed to both).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

import revzoo

from .branches import PAIRED_ROUTES, AttentionBranch, MlpBranch

__all__ = ["PAIRED_ROUTES", "PaperRevViT", "PairedAttention", "PairedMlp", "streams_paired"]

NORM_EPS = 1e-6  # SlowFast's and mmpretrain's LayerNorms


class PairedAttention(AttentionBranch):
    """f: attention `F(x) = drop_path1(attn(norm1(x)))` on the two streams side by side (see the module)."""

    def forward(self, z: torch.Tensor, paired: bool = False) -> torch.Tensor:  # type: ignore[override]
        first, second = z.chunk(2, dim=-1)
        if paired:
            out = super().forward(second)
            return torch.cat([out, torch.zeros_like(out)], dim=-1)
        out = super().forward((first + second) / 2)
        return torch.cat([out, out], dim=-1)


class PairedMlp(MlpBranch):
    """g: the MLP `G(x) = drop_path2(mlp(norm2(x)))` on the two streams side by side (see the module)."""

    def forward(self, z: torch.Tensor, paired: bool = False) -> torch.Tensor:  # type: ignore[override]
        first, second = z.chunk(2, dim=-1)
        if paired:
            out = super().forward(first)
            return torch.cat([torch.zeros_like(out), out], dim=-1)
        out = super().forward((first + second) / 2)
        return torch.cat([out, out], dim=-1)


def streams_paired(stack: revzoo.ReversibleSequence) -> bool:
    """Returns whether `stack` runs the paper's coupling (reversible, plain coupling, no adapters): paired branches."""
    return stack.form == "reversible" and stack.coupling == revzoo.Coupling() and not stack.has_adapters


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PaperRevViT(revzoo.ZooModel):
    """The paper's RevViT: streams concatenated, LayerNorm over twice the width, mean over tokens, head.

    Args:
        img_size: image height and width (or a (height, width) pair).
        patch_size: patch height and width (or a pair).
        in_chans: image channels.
        num_classes: head outputs; 0 for no head (`forward` returns the pooled features).
        embed_dim: the width of each stream (the head sees twice it).
        depth: reversible blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over `embed_dim`.
        qkv_bias: bias on the query/key/value projection.
        drop_rate: dropout after the position embedding and before the head.
        attn_drop_rate: attention-weight dropout.
        proj_drop_rate: dropout after the attention and MLP projections.
        drop_path_rate: stochastic depth, rising linearly to this over the blocks (the paper: 0.1 S, 0.2 B).
        form: "reversible" (the paper's model) or "sequential" (the plain ViT of the same parameters).
        execution: "invert" (memory-free backward) or "autograd".
    """

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        form: str = "reversible",
        execution: str = "invert",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = 2 * embed_dim
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * index / max(depth - 1, 1) for index in range(depth)]  # linear, as the paper's code
        norm = partial(nn.LayerNorm, eps=NORM_EPS)
        blocks = [
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                  attn_drop=attn_drop_rate, drop_path=rate, norm_layer=norm)
            for rate in rates
        ]
        pairs = [(PairedAttention(block), PairedMlp(block)) for block in blocks]
        self.blocks = revzoo.ReversibleSequence(pairs, routes=PAIRED_ROUTES, form=form, execution=execution)
        self.norm = norm(2 * embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(2 * embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the normalised tokens `norm([X1, X2])`, shape (batch, tokens, 2 * embed_dim)."""
        x = self.patch_embed(x)
        x = self.pos_drop(x + self.pos_embed)
        z = torch.cat([x, x], dim=-1)
        paired = streams_paired(self.blocks)
        out = self.blocks(z, paired=paired)
        # paired: the engine's output is the mean of [X1, x] and [x, X2]; tied: both halves hold the one stream
        streams = 2 * out - z if paired else out
        return self.norm(streams)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Returns the head's logits for `forward_features`' tokens (their mean, with `pre_logits`)."""
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the head with a new one of `num_classes` outputs (0: none); revzoo_config records it."""
        self.num_classes = num_classes
        weight = self.norm.weight
        self.head = nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype) \
            if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            _init_weights(self.head)
        config = getattr(self, "revzoo_config", None)
        if config is not None:
            config["num_classes"] = num_classes


def _pair(value: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    parts = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return (parts[0], parts[-1])


def build_paper_revvit(*, form: str, **config: Any) -> PaperRevViT:
    """Returns a PaperRevViT of `config` in `form`, refusing sizes that cannot build one with revzoo.ConfigError."""
    for name in ("embed_dim", "num_heads", "in_chans"):
        value = config.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise revzoo.ConfigError(f"revvit option {name} must be an integer >= 1, got {value!r:.80}")
    for name in ("depth", "num_classes"):
        value = config.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise revzoo.ConfigError(f"revvit option {name} must be an integer >= 0, got {value!r:.80}")
    if config["embed_dim"] % config["num_heads"]:
        raise revzoo.ConfigError(
            f"revvit embed_dim {config['embed_dim']} is not a multiple of num_heads {config['num_heads']}"
        )
    for name in ("drop_rate", "attn_drop_rate", "proj_drop_rate", "drop_path_rate"):
        value = config.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise revzoo.ConfigError(f"revvit option {name} must be a number in [0, 1), got {value!r:.80}")
    mlp_ratio = config.get("mlp_ratio", 4.0)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise revzoo.ConfigError(f"revvit option mlp_ratio must be a number > 0, got {mlp_ratio!r:.80}")
    sizes = {name: config[name] for name in ("img_size", "patch_size")}
    for name, value in sizes.items():
        parts = value if isinstance(value, (list, tuple)) else (value,)
        if not 1 <= len(parts) <= 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in parts):
            raise revzoo.ConfigError(f"revvit option {name} must be an integer >= 1 or a pair of them, got {value!r:.80}")
    img, patch = (_pair(value) for value in sizes.values())
    if any(i < p for i, p in zip(img, patch)):
        raise revzoo.ConfigError(f"revvit img_size {sizes['img_size']!r} is smaller than patch_size {sizes['patch_size']!r}")
    config = {**config, "img_size": img, "patch_size": patch}
    return PaperRevViT(form=form, **config)
