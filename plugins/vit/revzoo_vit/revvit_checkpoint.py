"""The "slowfast-revvit" and "mmpretrain-revvit" checkpoint formats: the paper's RevViT weights in and out of revzoo.

Both formats hold the same model (patch embedding, position embedding, blocks of F = attention
and G = MLP, a LayerNorm over the two streams concatenated, a linear head); only the names differ.
Keys map 1:1, but for SlowFast's separate q, k, v projections, which revzoo (and mmpretrain) fuse:

    SlowFast (MViT, MVIT.REV.ENABLE)          mmpretrain (RevVisionTransformer)    revzoo (PaperRevViT)
    patch_embed.proj.*                        backbone.patch_embed.projection.*    patch_embed.proj.*
    pos_embed                                 backbone.pos_embed                   pos_embed
    rev_backbone.layers.{i}.F.norm.*          backbone.layers.{i}.ln1.*            blocks.blocks.{i}.f.norm1.*
    rev_backbone.layers.{i}.F.attn.{q,k,v}.*  backbone.layers.{i}.attn.qkv.*       blocks.blocks.{i}.f.attn.qkv.*
    rev_backbone.layers.{i}.F.attn.proj.*     backbone.layers.{i}.attn.proj.*      blocks.blocks.{i}.f.attn.proj.*
    rev_backbone.layers.{i}.G.norm.*          backbone.layers.{i}.ln2.*            blocks.blocks.{i}.g.norm2.*
    rev_backbone.layers.{i}.G.mlp.fc1.*       backbone.layers.{i}.ffn.layers.0.0.* blocks.blocks.{i}.g.mlp.fc1.*
    rev_backbone.layers.{i}.G.mlp.fc2.*       backbone.layers.{i}.ffn.layers.1.*   blocks.blocks.{i}.g.mlp.fc2.*
    norm.*                                    backbone.ln1.*                       norm.*
    head.projection.*                         head.fc.*                            head.*

The tensors fix every size but the head count: it comes from `num_heads=`, else from the `cfg`
text a SlowFast checkpoint carries, else the papers' head width of 64 (RevViT-S: 6, RevViT-B: 12).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import revzoo

from .config import REVVIT_VARIANTS
from .revvit import PaperRevViT, build_paper_revvit

__all__ = [
    "read_mmpretrain_revvit", "read_slowfast_revvit", "translate", "write_mmpretrain_revvit", "write_slowfast_revvit",
]

_OPTIONS = ("num_heads", "img_size", "drop_rate", "attn_drop_rate", "proj_drop_rate", "drop_path_rate")
_HEAD_WIDTH = 64  # RevViT-S and -B: 384 / 6 and 768 / 12
_BLOCK = "blocks.blocks.{}."

# One row per tensor: revzoo's name, SlowFast's, mmpretrain's; {i} is the block index, {p} weight or bias.
_NAMES = [
    ("patch_embed.proj.{p}", "patch_embed.proj.{p}", "backbone.patch_embed.projection.{p}"),
    ("pos_embed", "pos_embed", "backbone.pos_embed"),
    ("blocks.blocks.{i}.f.norm1.{p}", "rev_backbone.layers.{i}.F.norm.{p}", "backbone.layers.{i}.ln1.{p}"),
    ("blocks.blocks.{i}.f.attn.qkv.{p}", "rev_backbone.layers.{i}.F.attn.qkv.{p}", "backbone.layers.{i}.attn.qkv.{p}"),
    ("blocks.blocks.{i}.f.attn.proj.{p}", "rev_backbone.layers.{i}.F.attn.proj.{p}", "backbone.layers.{i}.attn.proj.{p}"),
    ("blocks.blocks.{i}.g.norm2.{p}", "rev_backbone.layers.{i}.G.norm.{p}", "backbone.layers.{i}.ln2.{p}"),
    ("blocks.blocks.{i}.g.mlp.fc1.{p}", "rev_backbone.layers.{i}.G.mlp.fc1.{p}", "backbone.layers.{i}.ffn.layers.0.0.{p}"),
    ("blocks.blocks.{i}.g.mlp.fc2.{p}", "rev_backbone.layers.{i}.G.mlp.fc2.{p}", "backbone.layers.{i}.ffn.layers.1.{p}"),
    ("norm.{p}", "norm.{p}", "backbone.ln1.{p}"),
    ("head.{p}", "head.projection.{p}", "head.fc.{p}"),
]
_COLUMN = {"revzoo": 0, "slowfast-revvit": 1, "mmpretrain-revvit": 2}
_WRAPPER = {"slowfast-revvit": "model_state", "mmpretrain-revvit": "state_dict"}  # training checkpoints' weights
_SLOWFAST_QKV = re.compile(r"^rev_backbone\.layers\.(\d+)\.F\.attn\.([qkv])\.(weight|bias)$")


def _template(name: str) -> re.Pattern[str]:
    pattern = re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{pattern}$")


_PATTERNS = {column: [(_template(row[index]), row) for row in _NAMES] for column, index in _COLUMN.items()}


def translate(key: str, source: str, target: str) -> str | None:
    """Returns `key`, a tensor name in `source`'s layout ("revzoo" or a format's name), in `target`'s; None if unknown."""
    for pattern, row in _PATTERNS[source]:
        match = pattern.match(key)
        if match is not None:
            return row[_COLUMN[target]].format(**match.groupdict())
    return None


def _listing(keys: list[str]) -> str:
    return f"{len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"


def _tensors(obj: Any, fmt: str) -> tuple[dict[str, torch.Tensor], Mapping[str, Any]]:
    """Returns the state dict inside `obj` (under the format's wrapper key, or `obj` itself) and `obj`, checked."""
    outer = obj if isinstance(obj, Mapping) else {}
    if isinstance(outer.get(_WRAPPER[fmt]), Mapping):
        obj = outer[_WRAPPER[fmt]]
    for other, key in _WRAPPER.items():
        if other != fmt and isinstance(outer.get(key), Mapping):
            raise revzoo.CheckpointError(f"this is a {other} checkpoint (its weights under {key!r}), not {fmt}: "
                                         f"revzoo import {other} IN OUT")
    if not isinstance(obj, Mapping) or not obj:
        raise revzoo.CheckpointError(f"a {fmt} checkpoint is a state dict of tensors, got {type(obj).__name__}")
    others = sorted(str(key) for key, value in obj.items() if not isinstance(value, torch.Tensor))
    if others:
        raise revzoo.CheckpointError(f"{fmt} checkpoint entries that are not tensors: {_listing(others)}")
    return {re.sub(r"^module\.", "", key): value for key, value in obj.items()}, outer


def _mapped(state: Mapping[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Returns `state` under revzoo's keys, SlowFast's q, k, v fused, or raises naming the keys that fit nowhere."""
    tensors: dict[str, torch.Tensor] = {}
    separate: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unmapped = []
    for key, value in state.items():
        split = _SLOWFAST_QKV.match(key) if fmt == "slowfast-revvit" else None
        if split is not None:
            index, part, kind = split.groups()
            separate.setdefault((index, kind), {})[part] = value
            continue
        name = translate(key, fmt, "revzoo")
        if name is None:
            unmapped.append(key)
        else:
            tensors[name] = value
    if unmapped:
        hint = "; a class token (with_cls_token) is not the paper's RevViT" if any("cls_token" in k for k in unmapped) \
            else ""
        for other in _WRAPPER:
            if other != fmt and all(translate(re.sub(r"\.[qkv]\.", ".qkv.", key), other, "revzoo") for key in unmapped):
                hint = f"; they are {other}'s names: revzoo import {other} IN OUT"
        raise revzoo.CheckpointError(f"{fmt} checkpoint keys revzoo's RevViT has no place for: "
                                     f"{_listing(sorted(unmapped))}{hint}")
    for (index, kind), parts in sorted(separate.items()):
        if set(parts) != {"q", "k", "v"}:
            raise revzoo.CheckpointError(f"{fmt} checkpoint block {index} has attn {sorted(parts)} {kind}s, "
                                         "not all of q, k and v")
        shapes = {tuple(t.shape) for t in parts.values()}
        if len(shapes) != 1:
            raise revzoo.CheckpointError(f"{fmt} checkpoint block {index}: attn q, k, v {kind}s differ in shape {shapes}")
        tensors[f"{_BLOCK.format(index)}f.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return tensors


def _shape(tensors: Mapping[str, torch.Tensor], key: str, ndim: int, fmt: str) -> tuple[int, ...]:
    if key not in tensors:
        raise revzoo.CheckpointError(f"{fmt} checkpoint has no {key!r} (in revzoo's names); is it a RevViT?")
    shape = tuple(tensors[key].shape)
    if len(shape) != ndim:
        raise revzoo.CheckpointError(f"{fmt} checkpoint: {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def _heads_from_cfg(outer: Mapping[str, Any]) -> int | None:
    """Returns MVIT.NUM_HEADS from the YAML text a SlowFast checkpoint keeps under "cfg", if it is there."""
    text = outer.get("cfg")
    if not isinstance(text, str):
        return None
    section = re.search(r"^MVIT:\n((?:[ \t]+.*\n?|\n)*)", text, re.M)
    found = re.search(r"^[ \t]+NUM_HEADS:[ \t]*(\d+)[ \t]*$", section.group(1), re.M) if section else None
    return int(found.group(1)) if found else None


def _config(tensors: Mapping[str, torch.Tensor], fmt: str, num_heads: int | None) -> dict[str, Any]:
    """Returns the PaperRevViT config the tensors fix, with `num_heads` (or the head width of 64)."""
    embed_dim, in_chans, patch_h, patch_w = _shape(tensors, "patch_embed.proj.weight", 4, fmt)
    _, tokens, _ = _shape(tensors, "pos_embed", 3, fmt)
    grid = round(tokens**0.5)
    if grid * grid != tokens:
        raise revzoo.CheckpointError(f"{fmt} checkpoint: {tokens} position embeddings are not a square grid of patches")
    indices = sorted({int(m.group(1)) for key in tensors if (m := re.match(r"^blocks\.blocks\.(\d+)\.", key))})
    if indices != list(range(len(indices))):
        shown = indices if len(indices) < 8 else [*indices[:3], "...", *indices[-3:]]
        raise revzoo.CheckpointError(f"{fmt} checkpoint block indices must run 0..depth-1, found {shown}")
    hidden = _shape(tensors, f"{_BLOCK.format(0)}g.mlp.fc1.weight", 2, fmt)[0] if indices else 4 * embed_dim
    if num_heads is None:
        if embed_dim % _HEAD_WIDTH:
            raise revzoo.CheckpointError(
                f"{fmt} checkpoint of width {embed_dim}: its head count is not in the tensors and not the papers' "
                f"width-{_HEAD_WIDTH} heads; pass it (--option num_heads=N)"
            )
        num_heads = embed_dim // _HEAD_WIDTH
    return {
        "img_size": grid * patch_h if patch_h == patch_w else [grid * patch_h, grid * patch_w],
        "patch_size": patch_h if patch_h == patch_w else [patch_h, patch_w],
        "in_chans": in_chans,
        "num_classes": int(tensors["head.weight"].shape[0]) if "head.weight" in tensors else 0,
        "embed_dim": embed_dim,
        "depth": len(indices),
        "num_heads": num_heads,
        "mlp_ratio": hidden / embed_dim,
        "qkv_bias": f"{_BLOCK.format(0)}f.attn.qkv.bias" in tensors if indices else True,
    }


def _variant(config: Mapping[str, Any]) -> str:
    """Returns the registered variant of the config's width and heads (the config overrides the rest)."""
    for name, (embed_dim, num_heads, _) in REVVIT_VARIANTS.items():
        if (embed_dim, num_heads) == (config["embed_dim"], config["num_heads"]):
            return name
    return "revvit-small"


def _read(obj: Any, fmt: str, options: Mapping[str, Any],
          heads_from: Callable[[Mapping[str, Any]], int | None]) -> revzoo.ImportedCheckpoint:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise revzoo.CheckpointError(f"{fmt} takes no option(s) {', '.join(unknown)}; valid: {', '.join(_OPTIONS)}")
    state, outer = _tensors(obj, fmt)
    tensors = _mapped(state, fmt)
    config = _config(tensors, fmt, options.get("num_heads") or heads_from(outer))
    if "img_size" in options and options["img_size"] != config["img_size"]:
        raise revzoo.CheckpointError(
            f"{fmt} checkpoint's position embedding is for img_size {config['img_size']}, not {options['img_size']!r} "
            "(revzoo does not resample it on import)"
        )
    config.update({key: value for key, value in options.items() if key not in ("img_size", "num_heads")})
    try:
        with torch.device("meta"):  # shapes only: checked before anything is allocated
            expected = build_paper_revvit(form="reversible", **config).state_dict()
    except revzoo.ConfigError as err:
        raise revzoo.CheckpointError(f"{fmt} checkpoint: {err}") from err
    unmapped, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
    if unmapped or missing:
        raise revzoo.CheckpointError(
            f"{fmt} checkpoint does not fit a RevViT: extra {_listing(unmapped)}; missing {_listing(missing)}"
        )
    misshapen = sorted(f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
                       for key, value in tensors.items() if value.shape != expected[key].shape)
    if misshapen:
        raise revzoo.CheckpointError(
            f"{fmt} checkpoint shapes do not fit the RevViT its patch embedding and blocks describe: "
            f"{_listing(misshapen)}"
        )
    return revzoo.ImportedCheckpoint(architecture=_variant(config), config=config, form="reversible", tensors=tensors)


def read_slowfast_revvit(obj: Any, **options: Any) -> revzoo.ImportedCheckpoint:
    """Returns a SlowFast RevViT checkpoint (`REV_VIT_S.pyth`: `model_state`, `cfg`, ...) as a revzoo checkpoint.

    Options: `num_heads` (default: the file's `cfg` MVIT.NUM_HEADS, else width / 64), `img_size` (checked
    against the position embedding) and the dropout rates for fine-tuning.

    Raises:
        revzoo.CheckpointError: not a RevViT state dict (keys, shapes), or options it does not take.
    """
    return _read(obj, "slowfast-revvit", options, _heads_from_cfg)


def read_mmpretrain_revvit(obj: Any, **options: Any) -> revzoo.ImportedCheckpoint:
    """Returns an mmpretrain RevVisionTransformer checkpoint (ImageClassifier keys `backbone.*`, `head.fc.*`;
    a training checkpoint's `state_dict`) as a revzoo checkpoint. Options as for "slowfast-revvit"
    (`num_heads` defaults to width / 64, as in mmpretrain's revvit-small and revvit-base configs).
    """
    return _read(obj, "mmpretrain-revvit", options, lambda outer: None)


def _revzoo_state(model: nn.Module, fmt: str) -> dict[str, torch.Tensor]:
    if not isinstance(model, PaperRevViT):
        raise revzoo.CheckpointError(f"the {fmt} format holds the paper's RevViT (revvit-*), not {type(model).__name__}")
    if revzoo.get_form(model) != "reversible" or model.blocks.has_adapters or model.blocks.coupling != revzoo.Coupling():
        warnings.warn(f"writing {fmt}: the model does not run the paper's reversible coupling (form, coupling or "
                      "adapters changed), which that code computes, so its outputs differ there", UserWarning, stacklevel=3)
    return model.state_dict()


def write_slowfast_revvit(model: nn.Module) -> dict[str, Any]:
    """Returns `{"model_state": ...}`, `model`'s weights under SlowFast's keys (q, k, v split), as SlowFast loads."""
    state = {}
    for key, value in _revzoo_state(model, "slowfast-revvit").items():
        fused = re.fullmatch(r"blocks\.blocks\.(\d+)\.f\.attn\.qkv\.(weight|bias)", key)
        if fused is None:
            state[translate(key, "revzoo", "slowfast-revvit")] = value
            continue
        index, kind = fused.groups()
        for part, chunk in zip("qkv", value.chunk(3)):
            state[f"rev_backbone.layers.{index}.F.attn.{part}.{kind}"] = chunk.contiguous()
    return {"model_state": state}


def write_mmpretrain_revvit(model: nn.Module) -> dict[str, torch.Tensor]:
    """Returns `model`'s weights under mmpretrain's ImageClassifier keys (loadable with `load_checkpoint`)."""
    state = _revzoo_state(model, "mmpretrain-revvit")
    return {translate(key, "revzoo", "mmpretrain-revvit"): value for key, value in state.items()}
