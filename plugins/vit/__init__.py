"""revzoo_vit: reversible Vision Transformers from timm's VisionTransformer (revzoo's built-in "vit" plugin).

Each timm `Block` becomes one reversible block, f = drop_path1(ls1(attn(norm1(x)))) and
g = drop_path2(ls2(mlp(norm2(x)))), after the Reversible Vision Transformer
(Mangalam et al., CVPR 2022). Everything else is timm's own modules and methods.
"""

from __future__ import annotations

from .branches import AttentionBranch, MlpBranch
from .checkpoint import read_timm, write_timm
from .convert import config_from_timm, from_timm, to_timm
from .keys import revzoo_key_to_timm, timm_key_to_revzoo
from .model import RevViT
from .registration import build_timm_vit, register_adapters, register_architectures, register_formats

__all__ = [
    "AttentionBranch",
    "MlpBranch",
    "RevViT",
    "build_timm_vit",
    "config_from_timm",
    "from_timm",
    "read_timm",
    "register_adapters",
    "register_architectures",
    "register_formats",
    "revzoo_key_to_timm",
    "timm_key_to_revzoo",
    "to_timm",
    "write_timm",
]
