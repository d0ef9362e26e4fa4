"""The "timm" checkpoint format: timm VisionTransformer state dicts in and out of revzoo.

A timm state dict holds only tensors, not the architecture, so reading needs the timm
model name (`model=`, the CLI's `--model`). The class count and depth are read from the
tensors; other timm kwargs may be given as options. timm's own `checkpoint_filter_fn`
then adapts the layouts timm knows (OpenAI CLIP, DINOv2, position-embedding resampling).

Keys map 1:1:

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
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from timm.models import clean_state_dict
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

import revzoo

from .branches import ATTENTION_PARTS, MLP_PARTS
from .config import create_timm_vit
from .model import STACK_PREFIX, RevViT

__all__ = ["read_timm", "revzoo_key_to_timm", "timm_key_to_revzoo", "write_timm"]

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # training checkpoints nest the weights
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")
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


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > 5 else ''})"


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise revzoo.CheckpointError(f"a timm checkpoint is a state dict of tensors, got {type(obj).__name__}")
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    others = sorted(str(key) for key in obj if key not in tensors)
    if others:
        raise revzoo.CheckpointError(f"timm checkpoint entries that are not tensors: {_listing(others)}")
    return clean_state_dict(tensors)


def _inferred_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Returns the class count and depth that the tensors themselves fix."""
    config: dict[str, Any] = {"num_classes": int(state["head.weight"].shape[0]) if "head.weight" in state else 0}
    indices = sorted({int(match.group(1)) for key in state if (match := _BLOCK_INDEX.match(key))})
    if indices != list(range(len(indices))):  # the depth is what the tensors hold, never a number a key claims
        shown = indices if len(indices) < 8 else [*indices[:3], "...", *indices[-3:]]
        raise revzoo.CheckpointError(f"timm checkpoint block indices must run 0..depth-1, found {shown}")
    if indices:
        config["depth"] = len(indices)
    return config


def read_timm(obj: Any, *, model: str | None = None, **options: Any) -> revzoo.ImportedCheckpoint:
    """Returns a timm VisionTransformer state dict as a revzoo checkpoint of the "timm" architecture.

    Args:
        obj: the state dict (or a training checkpoint holding one under "model"/"state_dict").
        model: the timm model name, e.g. "vit_small_patch16_224".
        options: further timm kwargs (e.g. img_size); num_classes and depth default to the tensors'.

    Raises:
        revzoo.CheckpointError: no model name, or keys/shapes that do not fit that model.
    """
    if not model:
        raise revzoo.CheckpointError(
            "a timm state dict does not name its architecture; pass the timm model name "
            "(--model vit_small_patch16_224)"
        )
    state = _state_dict(obj)
    kwargs = {**_inferred_config(state), **options}
    try:
        with torch.device("meta"):  # shapes only: the tensors are checked before anything is allocated
            skeleton = create_timm_vit(model, kwargs)
    except revzoo.ConfigError as err:
        raise revzoo.CheckpointError(str(err)) from err
    state = checkpoint_filter_fn(state, skeleton)
    expected = skeleton.state_dict()
    unmapped = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unmapped or missing:
        raise revzoo.CheckpointError(
            f"timm checkpoint does not fit {model!r}: unmapped keys {_listing(unmapped)}; missing keys {_listing(missing)}"
        )
    misshapen = sorted(
        f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in state.items()
        if value.shape != expected[key].shape
    )
    if misshapen:
        raise revzoo.CheckpointError(f"timm checkpoint shapes do not fit {model!r}: {_listing(misshapen)}")
    return revzoo.ImportedCheckpoint(
        architecture="timm",
        config={"model_name": model, **kwargs},
        form="sequential",  # timm's weights compute the sequential form
        tensors={timm_key_to_revzoo(key): value for key, value in state.items()},
    )


def write_timm(model: nn.Module) -> dict[str, torch.Tensor]:
    """Returns `model`'s state dict under timm's keys (loadable by the timm model of its config)."""
    if not isinstance(model, RevViT):
        raise revzoo.CheckpointError(f"the timm format holds revzoo ViT models (RevViT), not {type(model).__name__}")
    if revzoo.get_form(model) == "reversible":
        warnings.warn(
            "writing a reversible-form model in timm's layout: timm computes the sequential form, "
            "so the weights give different outputs there",
            UserWarning,
            stacklevel=2,
        )
    return {revzoo_key_to_timm(key): value for key, value in model.state_dict().items()}
