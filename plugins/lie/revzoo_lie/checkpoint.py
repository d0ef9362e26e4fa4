"""Reads lie-transformer-pytorch 0.0.17 state dicts (sequential or reversible key layout) into revzoo's layout.

lie-transformer-pytorch stores each attention tensor twice (``...attn.X`` and ``...net.1.X``, the
same module reached by two paths); both names are accepted, and they must agree. Its radius
buffers (``...r``) have no counterpart here (revzoo's neighbourhood ball is computed from the data)
and are dropped. Its location kernel reads ``log(key^-1 query)`` where revzoo reads
``log(query^-1 key) = -log(key^-1 query)``, so the kernel's first-layer columns for the six pair
coordinates are negated: the kernel computes the same function of the same pair of elements.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

import revzoo

from .config import DEFAULTS

UPSTREAM_PAIR_DIM = 6  # lie-transformer-pytorch only implements SE(3)
OPTIONS = ("heads", "liftsamples", "nbhd", "fill", "mean")

_ATTENTION_KEYS = {
    "to_q.weight": "attention.to_q.weight",
    "to_k.weight": "attention.to_k.weight",
    "to_v.weight": "attention.to_v.weight",
    "to_out.weight": "attention.to_out.weight",
    "to_out.bias": "attention.to_out.bias",
    "loc_attn_mlp.0.weight": "attention.location_kernel.net.0.weight",
    "loc_attn_mlp.0.bias": "attention.location_kernel.net.0.bias",
    "loc_attn_mlp.2.weight": "attention.location_kernel.net.2.weight",
    "loc_attn_mlp.2.bias": "attention.location_kernel.net.2.bias",
}
_FEED_FORWARD_LAYERS = {"0": "norm", "1": "proj_in", "3": "proj_out"}
_TOP_LEVEL = {
    "token_emb.weight": "token_emb.weight",
    "edge_emb.weight": "edge_emb.weight",
    "to_logits.0.fn.weight": "head_norm.weight",
    "to_logits.0.fn.bias": "head_norm.bias",
    "to_logits.1.fn.weight": "head.weight",
    "to_logits.1.fn.bias": "head.bias",
}
# (layout, pattern) -> how the captured groups name a revzoo key; the attention appears under two prefixes.
_BLOCK_PATTERNS = (
    ("sequential", re.compile(r"^net\.blocks\.(\d+)\.0\.(?:attn|net\.1)\.(.+)$"), "attention"),
    ("sequential", re.compile(r"^net\.blocks\.(\d+)\.0\.net\.0\.fn\.(weight|bias)$"), "attention_norm"),
    ("sequential", re.compile(r"^net\.blocks\.(\d+)\.1\.net\.(\d)\.fn\.(weight|bias)$"), "feed_forward"),
    ("reversible", re.compile(r"^net\.blocks\.(\d+)\.f\.net\.(?:attn|net\.1)\.(.+)$"), "attention"),
    ("reversible", re.compile(r"^net\.blocks\.(\d+)\.f\.net\.net\.0\.fn\.(weight|bias)$"), "attention_norm"),
    ("reversible", re.compile(r"^net\.blocks\.(\d+)\.g\.net\.net\.(\d)\.fn\.(weight|bias)$"), "feed_forward"),
)


def _revzoo_key(kind: str, groups: tuple[str, ...]) -> str | None:
    """Returns the revzoo key for a matched block key, "" for a tensor dropped on purpose, None if unknown."""
    block = f"stack.blocks.{groups[0]}"
    if kind == "attention":
        if groups[1] == "r":
            return ""
        target = _ATTENTION_KEYS.get(groups[1])
        return f"{block}.f.{target}" if target else None
    if kind == "attention_norm":
        return f"{block}.f.norm.{groups[1]}"
    layer = _FEED_FORWARD_LAYERS.get(groups[1])
    return f"{block}.g.{layer}.{groups[2]}" if layer else None


def _unwrap(obj: Any) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    """Returns the state dict and the hyperparameters saved beside it (``hparams``, if any)."""
    hparams: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("hparams"), Mapping):
            hparams = dict(obj["hparams"])
        for wrapper in ("state_dict", "model", "weights"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        if obj and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items()):
            return obj, hparams
    raise revzoo.CheckpointError(
        "a lie-transformer-pytorch checkpoint must be a state dict of tensors, optionally under 'state_dict', "
        "'model' or 'weights' beside an 'hparams' dict, e.g. torch.save(model.state_dict(), path)"
    )


def _describe(keys: list[str]) -> str:
    return f"{len(keys)} key(s), first: {', '.join(keys[:5])}"


def read_lie_transformer_pytorch(obj: Any, **options: Any) -> revzoo.ImportedCheckpoint:
    """Returns the revzoo architecture, config, form and tensors of a lie-transformer-pytorch 0.0.17 state dict.

    Options (the ones a state dict cannot tell): ``heads`` (default 8, upstream's default; the
    attention width is heads * dim_head), ``liftsamples``, ``nbhd``, ``fill``, ``mean``. They may
    also be saved in the file as ``{"state_dict": ..., "hparams": {"heads": 2, ...}}`` (the
    LieTransformer constructor's kwargs); explicit options win.
    """
    unknown_options = sorted(set(options) - set(OPTIONS))
    if unknown_options:
        raise revzoo.CheckpointError(
            f"unknown option(s) {unknown_options} for lie-transformer-pytorch; valid: {', '.join(OPTIONS)}"
        )
    state, hparams = _unwrap(obj)
    options = {**{key: hparams[key] for key in OPTIONS if key in hparams}, **options}
    tensors: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    layouts: set[str] = set()
    unmapped: list[str] = []
    for key, tensor in state.items():
        target = _TOP_LEVEL.get(key)
        for layout, pattern, kind in _BLOCK_PATTERNS if target is None else ():
            match = pattern.match(key)
            if match:
                layouts.add(layout)
                if len(layouts) > 1:
                    raise revzoo.CheckpointError(
                        f"expected the blocks of one form, found both sequential and reversible block keys (e.g. {key!r})"
                    )
                target = _revzoo_key(kind, match.groups())
                break
        if target is None:
            unmapped.append(key)
        elif target and target in tensors:
            if not torch.equal(tensors[target], tensor):
                raise revzoo.CheckpointError(f"{sources[target]!r} and {key!r} name the same attention tensor but differ")
        elif target:
            tensors[target], sources[target] = tensor, key
    if unmapped:
        raise revzoo.CheckpointError(
            f"cannot map {_describe(sorted(unmapped))} (not a lie-transformer-pytorch 0.0.17 state dict?)"
        )
    if not layouts:
        raise revzoo.CheckpointError("no lie-transformer-pytorch block keys (net.blocks.*) in the checkpoint")
    config = _infer_config(tensors, sources, options)
    conflicts = {
        key: (value, config[key])
        for key, value in hparams.items()
        if value is not None and key in config and config[key] != value
    }
    if conflicts:
        raise revzoo.CheckpointError(f"hparams disagree with the tensors (saved, inferred): {conflicts}")
    kernel_key = "stack.blocks.{}.f.attention.location_kernel.net.0.weight"
    for block in range(config["depth"]):
        weight = tensors[kernel_key.format(block)].clone()
        weight[:, :UPSTREAM_PAIR_DIM] = -weight[:, :UPSTREAM_PAIR_DIM]
        tensors[kernel_key.format(block)] = weight
    return revzoo.ImportedCheckpoint(architecture="lie-transformer", config=config, form=layouts.pop(), tensors=tensors)


def _infer_config(
    tensors: dict[str, torch.Tensor], sources: dict[str, str], options: dict[str, Any]
) -> dict[str, Any]:
    blocks = sorted({int(key.split(".")[2]) for key in tensors if key.startswith("stack.blocks.")})
    if not blocks or blocks != list(range(len(blocks))):
        raise revzoo.CheckpointError(f"expected blocks 0..depth-1, found block indices {blocks}")
    needed = [
        f"stack.blocks.{i}.{part}"
        for i in blocks
        for part in ("f.attention.to_q.weight", "f.attention.location_kernel.net.0.weight", "g.proj_in.weight")
    ] + ["head.weight"]
    missing = [key for key in needed if key not in tensors]
    if missing:
        raise revzoo.CheckpointError(f"incomplete checkpoint: no tensor for {_describe(missing)}")
    flat = [f"{sources[key]} {tuple(tensors[key].shape)}" for key in needed + ["token_emb.weight", "edge_emb.weight"]
            if key in tensors and tensors[key].ndim != 2]
    if flat:
        raise revzoo.CheckpointError(f"expected 2-D weight matrices, got {_describe(flat)}")
    inner, dim = tensors["stack.blocks.0.f.attention.to_q.weight"].shape
    if "heads" not in options:
        warnings.warn(
            f"heads not given: assuming lie-transformer-pytorch's default {DEFAULTS['heads']} "
            f"(dim_head {int(inner) // DEFAULTS['heads']} of the attention width {int(inner)}); "
            "if the model used other heads, save {'state_dict': ..., 'hparams': {'heads': H}} and import again",
            stacklevel=3,
        )
    heads = options.get("heads", DEFAULTS["heads"])
    if not isinstance(heads, int) or heads < 1 or inner % heads:
        raise revzoo.CheckpointError(
            f"heads={heads!r} does not divide the attention width {inner}; pass the heads the model was built with"
        )
    kernel_in = tensors["stack.blocks.0.f.attention.location_kernel.net.0.weight"].shape[1]
    edge_dim = kernel_in - UPSTREAM_PAIR_DIM
    config: dict[str, Any] = {
        "dim": int(dim),
        "num_tokens": int(tensors["token_emb.weight"].shape[0]) if "token_emb.weight" in tensors else None,
        "num_edge_types": int(tensors["edge_emb.weight"].shape[0]) if "edge_emb.weight" in tensors else None,
        "edge_dim": edge_dim or None,
        "heads": heads,
        "dim_head": int(inner) // heads,
        "depth": len(blocks),
        "dim_out": int(tensors["head.weight"].shape[0]),
        "group": "SE3",
        "ff_mult": int(tensors["stack.blocks.0.g.proj_in.weight"].shape[0]) // int(dim),
    }
    if "edge_emb.weight" in tensors and tensors["edge_emb.weight"].shape[1] != edge_dim:
        raise revzoo.CheckpointError(
            f"edge_emb width {tensors['edge_emb.weight'].shape[1]} does not match "
            f"the location kernel's {edge_dim} edge inputs"
        )
    for name in ("liftsamples", "nbhd", "fill", "mean"):
        if name in options:
            config[name] = options[name]
    return config
