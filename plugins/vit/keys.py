"""The 1:1 map between timm's VisionTransformer state-dict keys and RevViT's.

    timm                          revzoo (RevViT)
    blocks.{i}.norm1.*            blocks.blocks.{i}.f.norm1.*
    blocks.{i}.attn.*             blocks.blocks.{i}.f.attn.*
    blocks.{i}.ls1.*              blocks.blocks.{i}.f.ls1.*
    blocks.{i}.norm2.*            blocks.blocks.{i}.g.norm2.*
    blocks.{i}.mlp.*              blocks.blocks.{i}.g.mlp.*
    blocks.{i}.ls2.*              blocks.blocks.{i}.g.ls2.*
    anything else                 unchanged (patch_embed.*, cls_token, pos_embed, norm.*, head.*, ...)
"""

from __future__ import annotations

import re

from .branches import ATTENTION_PARTS, MLP_PARTS
from .model import STACK_PREFIX

__all__ = ["revzoo_key_to_timm", "timm_key_to_revzoo"]

_PARTS = "|".join(ATTENTION_PARTS + MLP_PARTS)
_TIMM_BLOCK_KEY = re.compile(rf"^blocks\.(\d+)\.({_PARTS})\.(.+)$")
_REVZOO_BLOCK_KEY = re.compile(rf"^{re.escape(STACK_PREFIX)}(\d+)\.[fg]\.({_PARTS})\.(.+)$")


def timm_key_to_revzoo(key: str) -> str:
    """Returns RevViT's name for timm's state-dict key `key`."""
    match = _TIMM_BLOCK_KEY.match(key)
    if match is None:
        return key
    index, part, rest = match.groups()
    branch = "f" if part in ATTENTION_PARTS else "g"
    return f"{STACK_PREFIX}{index}.{branch}.{part}.{rest}"


def revzoo_key_to_timm(key: str) -> str:
    """Returns timm's name for RevViT's state-dict key `key`."""
    match = _REVZOO_BLOCK_KEY.match(key)
    if match is None:
        return key
    index, part, rest = match.groups()
    return f"blocks.{index}.{part}.{rest}"
