"""DALLE-pytorch training-script checkpoints ("dalle-pytorch"): read into revzoo's layout, write back.

The script saves `{"hparams", "vae_params", "weights", "vae_class_name", "version", ...}`
with `torch.save`. Upstream nests each layer's modules in wrappers whose depth depends on
`shift_tokens` and the attention type, so keys are matched on their tail. The rotary table
(`transformer.pos_emb`) is derived and regenerated; shared input/output embeddings appear
upstream as aliases of `to_logits.1` and are dropped.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from typing import Any, NoReturn

import torch
from torch import nn

import revzoo

from .config import DEFAULTS, build_dalle
from .rotary import dalle_rotary_table
from .tokenizer import CLIP_VOCAB_SHA256, tokenizer_from_file, tokenizer_record
from .vae_checkpoint import is_train_vae_checkpoint, read_train_vae, write_train_vae

__all__ = ["UPSTREAM_DALLE_DEFAULTS", "config_from_checkpoint", "read_dalle_pytorch", "upstream_parameter_names",
           "write_dalle_pytorch", "write_dalle_pytorch_training"]

# DALLE.__init__ defaults of DALLE-pytorch 1.6.6: what upstream's generate.py gets for keys that hparams lacks.
UPSTREAM_DALLE_DEFAULTS: dict[str, Any] = {
    "num_text_tokens": 10000, "text_seq_len": 256, "heads": 8, "dim_head": 64, "reversible": False,
    "attn_dropout": 0.0, "ff_dropout": 0.0, "sparse_attn": False, "attn_types": None, "loss_img_weight": 7,
    "stable": False, "sandwich_norm": False, "shift_tokens": True, "rotary_emb": True,
    "shared_attn_ids": None, "shared_ff_ids": None, "share_input_output_emb": False,
    "optimize_for_inference": False,
}
_UPSTREAM_VAE_DEFAULTS: dict[str, Any] = {
    "image_size": 256, "num_tokens": 512, "codebook_dim": 512, "num_layers": 3, "num_resnet_blocks": 0,
    "hidden_dim": 64, "channels": 3,
}
_VAE_PARAM_NAMES = {"image_size": "image_size", "num_tokens": "num_image_tokens", "codebook_dim": "vae_codebook_dim",
                    "num_layers": "vae_num_layers", "num_resnet_blocks": "vae_num_resnet_blocks",
                    "hidden_dim": "vae_hidden_dim", "channels": "vae_channels"}
_PRETRAINED_VAES = {"OpenAIDiscreteVAE", "VQGanVAE"}  # image size 256; their weights are not imported
_COPIED_HPARAMS = ("num_text_tokens", "text_seq_len", "dim", "depth", "heads", "dim_head", "attn_dropout", "ff_dropout",
                   "loss_img_weight", "stable", "sandwich_norm", "shift_tokens", "rotary_emb", "share_input_output_emb")

_LAYER = re.compile(r"^transformer\.layers\.(?:blocks\.(\d+)\.([fg])\.net|layers\.(\d+)\.([01]))\.(.+)$")
_TAILS = (  # (branch, pattern of upstream's tail, revzoo's tail)
    (None, re.compile(r"^scale$"), "scale"),
    (None, re.compile(r"^fn\.norm\.(weight|bias)$"), r"norm.\1"),
    (None, re.compile(r"^fn\.norm_out\.(weight|bias)$"), r"norm_out.\1"),
    ("f", re.compile(r"^(?:fn\.)+to_qkv\.weight$"), "fn.to_qkv.weight"),
    ("f", re.compile(r"^(?:fn\.)+to_out\.0\.(weight|bias)$"), r"fn.to_out.\1"),
    ("g", re.compile(r"^(?:fn\.)+net\.0\.(weight|bias)$"), r"fn.proj_in.\1"),
    ("g", re.compile(r"^(?:fn\.)+net\.3\.(weight|bias)$"), r"fn.proj_out.\1"),
)
_TOP = {"to_logits.0.weight": "final_norm.weight", "to_logits.0.bias": "final_norm.bias",
        "to_logits.1.weight": "to_logits.weight", "to_logits.1.bias": "to_logits.bias",
        "text_emb.weight": "text_emb.weight", "image_emb.weight": "image_emb.weight",
        "text_pos_emb.weight": "text_pos_emb.weight"}
_DERIVED = re.compile(r"^(transformer\.pos_emb|(text|image)_emb\.linear\.(weight|bias))$")


def _fail(message: str) -> NoReturn:
    raise revzoo.CheckpointError(message)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return f"{shown}{', ...' if len(keys) > 5 else ''} ({len(keys)} in all)"


def config_side(config: Mapping[str, Any]) -> int:
    """Image grid side of a "dalle" config."""
    return config["image_size"] // 2 ** config["vae_num_layers"]


def _infer_fmap(weights: Mapping[str, torch.Tensor], text_seq_len: int) -> int:
    """Image grid side from the axial image embedding or the rotary table, for VAEs whose params are not saved."""
    if "image_pos_emb.weights_0" in weights and weights["image_pos_emb.weights_0"].ndim >= 2:
        side = weights["image_pos_emb.weights_0"].shape[1]
    elif "transformer.pos_emb" in weights and weights["transformer.pos_emb"].ndim >= 2:
        positions = weights["transformer.pos_emb"].shape[1] - text_seq_len - 1
        side = math.isqrt(max(positions, 0))
        if side * side != positions:
            _fail(f"transformer.pos_emb has {positions + text_seq_len + 1} positions; with text_seq_len {text_seq_len} "
                  "that is not 1 + text_seq_len + a square image grid")
    else:
        _fail("cannot tell the image grid size: the checkpoint has neither image_pos_emb nor transformer.pos_emb")
    if side < 1 or side & (side - 1) or side > 256:
        _fail(f"image grid side {side} (from the position embeddings) must be a power of 2 up to 256")
    return side


def _check_types(obj: Mapping[str, Any], hparams: Mapping[Any, Any]) -> None:
    """Refuses the values a training script never writes, before any arithmetic on them."""
    bad_keys = sorted(repr(key) for key in hparams if not isinstance(key, str))
    if bad_keys:
        _fail(f"DALLE-pytorch hparams have keys that are not names: {_listing(bad_keys)}")
    for name in ("text_seq_len", "num_text_tokens"):  # used in arithmetic before the config is validated
        value = hparams.get(name, UPSTREAM_DALLE_DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"DALLE-pytorch hparams {name} must be a positive integer, got {value!r:.80}")
    attn_types = hparams.get("attn_types")
    if not (attn_types is None or isinstance(attn_types, str) or (
            isinstance(attn_types, (list, tuple)) and all(isinstance(name, str) for name in attn_types))):
        _fail(f"DALLE-pytorch hparams attn_types must be a name, a comma-separated string or a list of names, "
              f"got {attn_types!r:.80}")
    for name in ("shared_attn_ids", "shared_ff_ids"):
        value = hparams.get(name)
        if value is not None and not isinstance(value, (list, tuple)):
            _fail(f"DALLE-pytorch hparams {name} must be None or a list of layer ids, got {value!r:.80}")
    weights = obj.get("weights")
    if not isinstance(weights, Mapping):
        _fail("not a DALLE-pytorch checkpoint: 'weights' (the state dict) is missing")
    odd = sorted(repr(key) for key, value in weights.items() if not isinstance(key, str) or not torch.is_tensor(value))
    if odd:
        _fail(f"DALLE-pytorch weights must map names to tensors; these entries do not: {_listing(odd)}")
    vae_params = obj.get("vae_params")
    if vae_params is not None and not (isinstance(vae_params, Mapping) and all(isinstance(k, str) for k in vae_params)):
        _fail(f"DALLE-pytorch vae_params must be a dict of DiscreteVAE options, got {type(vae_params).__name__}")
    if not isinstance(obj.get("vae_class_name", "DiscreteVAE"), str):
        _fail(f"DALLE-pytorch vae_class_name must be a class name, got {obj['vae_class_name']!r:.80}")


def config_from_checkpoint(obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Returns the full "dalle" config and the form described by a training-script checkpoint."""
    hparams = obj.get("hparams")
    if not isinstance(hparams, Mapping) or "dim" not in hparams or "depth" not in hparams:
        _fail("not a DALLE-pytorch checkpoint: neither a DALL-E (hparams with dim and depth) nor a train_vae.py VAE "
              "(hparams and encoder weights)")
    _check_types(obj, hparams)
    unknown = sorted(set(hparams) - set(UPSTREAM_DALLE_DEFAULTS) - {"dim", "depth"})
    if unknown:
        _fail(f"DALLE-pytorch hparams {unknown} are not supported by revzoo's dalle")
    params = {**UPSTREAM_DALLE_DEFAULTS, **hparams}
    if params["sparse_attn"]:
        _fail("sparse_attn=True (DeepSpeed sparse attention) is not supported; revzoo's dalle has no 'sparse' type")
    config = {**DEFAULTS, **{name: params[name] for name in _COPIED_HPARAMS}}
    config["attn_types"] = list(params["attn_types"] or ("full",))
    if isinstance(params["attn_types"], str):
        config["attn_types"] = params["attn_types"].split(",")
    for name in ("shared_attn_ids", "shared_ff_ids"):
        config[name] = None if params[name] is None else list(params[name])

    weights = obj["weights"]
    vae_class = obj.get("vae_class_name", "DiscreteVAE")
    if vae_class in _PRETRAINED_VAES:
        fmap = _infer_fmap(weights, config["text_seq_len"])
        if "to_logits.1.weight" not in weights or weights["to_logits.1.weight"].ndim != 2:
            _fail("cannot tell the number of image tokens: the checkpoint has no 2-D to_logits.1.weight")
        config.update(vae="none", image_size=256, vae_num_layers=(256 // fmap).bit_length() - 1,
                      num_image_tokens=weights["to_logits.1.weight"].shape[0] - config["num_text_tokens"]
                      - config["text_seq_len"])
    elif vae_class == "DiscreteVAE":
        vae_params = {**_UPSTREAM_VAE_DEFAULTS, **(obj.get("vae_params") or {})}
        unknown = sorted(set(vae_params) - set(_UPSTREAM_VAE_DEFAULTS))
        if unknown:
            _fail(f"DiscreteVAE params {unknown} are not supported by revzoo's dalle")
        config.update({_VAE_PARAM_NAMES[name]: value for name, value in vae_params.items()}, vae="discrete")
    else:
        _fail(f"unknown vae_class_name {vae_class!r}; expected DiscreteVAE, OpenAIDiscreteVAE or VQGanVAE")
    return config, "reversible" if params["reversible"] else "sequential"


def _map_key(key: str, form: str, import_vae: bool) -> str | None:
    """Returns revzoo's key for an upstream key, None for derived/aliased/skipped ones, or '' if unmapped."""
    if _DERIVED.match(key) or (key.startswith("vae.") and not import_vae):
        return None
    if key in _TOP or key.startswith("vae."):
        return _TOP.get(key, key)
    if key.startswith("image_pos_emb.weights_"):
        return {"image_pos_emb.weights_0": "image_pos_emb.row", "image_pos_emb.weights_1": "image_pos_emb.col"}.get(key, "")
    layer = _LAYER.match(key)
    if layer is None:
        return ""
    reversible_index, fg, sequential_index, zero_one, tail = layer.groups()
    if (reversible_index is not None) != (form == "reversible"):
        return ""
    index = reversible_index if reversible_index is not None else sequential_index
    branch = fg if fg is not None else "fg"[int(zero_one)]
    for only, pattern, replacement in _TAILS:
        if only in (None, branch) and pattern.match(tail):
            return f"transformer.layers.blocks.{index}.{branch}.{pattern.sub(replacement, tail)}"
    return ""


def upstream_parameter_names(weights: Mapping[str, torch.Tensor], form: str, count: int) -> list[str]:
    """Returns revzoo's names of the `count` parameters of an upstream optimizer, in its order.

    Upstream's optimizer takes `dalle.parameters()` (train_dalle.py: those requiring grad, so
    without the frozen VAE): the state dict's order, each shared tensor once, buffers left out.
    """
    groups: dict[tuple, list[str]] = {}
    for key, value in weights.items():
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        groups.setdefault(identity, []).append(key)
    names = []
    for keys in groups.values():
        mapped = [name for name in (_map_key(key, form, True) for key in keys) if name]
        if mapped:  # a group that maps to nothing is a derived buffer (the rotary table)
            names.append(mapped[0])
    for candidate in ([name for name in names if not name.startswith("vae.")], names):
        if len(candidate) == count:
            return candidate
    _fail(f"the checkpoint's optimizer holds {count} parameters; its DALL-E has {len(names)} "
          f"({len([n for n in names if not n.startswith('vae.')])} without the VAE)")


def _check_rotary_table(stored: torch.Tensor | None, config: Mapping[str, Any]) -> None:
    """The table is regenerated, not imported: refuse a file whose table revzoo would not reproduce."""
    if stored is None or not config["rotary_emb"]:
        return
    derived = dalle_rotary_table(config["dim_head"], config["text_seq_len"] + 1, config_side(config))
    if stored.shape != derived.shape or not torch.allclose(stored.float(), derived, rtol=0, atol=1e-4):
        _fail(f"transformer.pos_emb {tuple(stored.shape)} differs from the rotary table revzoo derives from the "
              f"hparams {tuple(derived.shape)}; was it made with another rotary-embedding-torch?")


def read_dalle_pytorch(obj: Any, *, bpe_path: str | None = None, **options: Any) -> revzoo.ImportedCheckpoint:
    """Reads a DALLE-pytorch training-script checkpoint (loaded without pickle) into revzoo's "dalle" layout.

    The model records CLIP's BPE as its tokenizer, as upstream's generate.py assumes, unless
    `bpe_path` names the vocabulary file it was trained with (`.json`: tokenizers, else YouTokenToMe).
    """
    if options:
        _fail(f"format dalle-pytorch takes only the option bpe_path, got {sorted(options)}")
    tokenizer = {"tokenizer": "clip", "tokenizer_sha256": CLIP_VOCAB_SHA256}
    if bpe_path is not None:
        tokenizer = tokenizer_record(tokenizer_from_file(bpe_path))
    if not isinstance(obj, Mapping):
        _fail(f"not a DALLE-pytorch checkpoint: expected the training script's dict, got {type(obj).__name__}")
    if is_train_vae_checkpoint(obj):
        if bpe_path is not None:
            _fail("bpe_path is for DALL-E checkpoints; this is a VAE (train_vae.py) checkpoint, which has no tokenizer")
        return read_train_vae(obj)
    config, form = config_from_checkpoint(obj)
    config.update(tokenizer)
    try:
        with torch.device("meta"):
            expected = build_dalle(form=form, **config).state_dict()
    except revzoo.ConfigError as err:
        raise revzoo.CheckpointError(f"the checkpoint's hparams do not describe a valid model: {err}") from err

    tensors: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in obj["weights"].items():
        target = _map_key(key, form, config["vae"] == "discrete")
        if target == "":
            unmapped.append(key)
        elif target is not None:
            tensors[target] = value
    if "image_pos_emb.row" in tensors:
        tensors["image_pos_emb.row"] = tensors["image_pos_emb.row"].reshape(config_side(config), -1)
        tensors["image_pos_emb.col"] = tensors["image_pos_emb.col"].reshape(config_side(config), -1)
    if unmapped:
        _fail(f"unexpected keys in the DALLE-pytorch checkpoint: {_listing(sorted(unmapped))}")
    _check_rotary_table(obj["weights"].get("transformer.pos_emb"), config)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        _fail(f"keys missing from the DALLE-pytorch checkpoint (revzoo names): {_listing(missing)}")
    mismatched = sorted(key for key in expected if tuple(expected[key].shape) != tuple(tensors[key].shape))
    if mismatched:
        key = mismatched[0]
        _fail(f"shape mismatch for {_listing(mismatched)}: {key} is {tuple(tensors[key].shape)}, "
              f"the hparams give {tuple(expected[key].shape)}")
    return revzoo.ImportedCheckpoint(architecture="dalle", config=config, form=form, tensors=tensors,
                                     training=_training_state(obj, form))


def _training_state(obj: Mapping[str, Any], form: str) -> revzoo.TrainingState | None:
    """train_dalle.py's `opt_state`, `scheduler_state` and `epoch`, by revzoo's parameter names.

    An optimizer state that does not fit the model is left out with a warning (the weights still import).
    """
    if obj.get("opt_state") is None:
        return None
    epoch = obj.get("epoch") or 0
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        _fail(f"DALLE-pytorch epoch must be a non-negative integer, got {epoch!r:.80}")
    try:
        count = sum(len(group["params"]) for group in obj["opt_state"]["param_groups"])
        names = upstream_parameter_names(obj["weights"], form, count)
        return revzoo.TrainingState.from_indexed(names, obj["opt_state"], obj.get("scheduler_state"), epoch)
    except (revzoo.CheckpointError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(f"the checkpoint's opt_state is left out: it does not fit its DALL-E ({err})",
                      revzoo.CheckpointWarning, stacklevel=2)
        return None


def _upstream_layer_key(key: str, form: str, shift_tokens: bool) -> str:
    match = re.match(r"^transformer\.layers\.blocks\.(\d+)\.([fg])\.(.+)$", key)
    index, branch, tail = match.groups()
    head = f"transformer.layers.blocks.{index}.{branch}.net" if form == "reversible" else \
        f"transformer.layers.layers.{index}.{'fg'.index(branch)}"
    shift = "fn.fn." if shift_tokens else ""
    inner = {"fn.to_qkv.weight": f"fn.{shift}fn.fn.to_qkv.weight", "fn.to_out.weight": f"fn.{shift}fn.fn.to_out.0.weight",
             "fn.to_out.bias": f"fn.{shift}fn.fn.to_out.0.bias", "fn.proj_in.weight": f"fn.{shift}fn.net.0.weight",
             "fn.proj_in.bias": f"fn.{shift}fn.net.0.bias", "fn.proj_out.weight": f"fn.{shift}fn.net.3.weight",
             "fn.proj_out.bias": f"fn.{shift}fn.net.3.bias"}
    return f"{head}.{inner.get(tail, tail if tail == 'scale' else 'fn.' + tail)}"


def _upstream_rank(key: str) -> tuple[int, ...]:
    """Where upstream's DALLE lists `key` in its state dict (and so its optimizer the parameter): module order.

    Position embeddings, the VAE, the rotary table, the layers (each: scale, norm, norm_out,
    then its attention or feed-forward), the logits head, then the token embeddings. A
    stable sort by this rank keeps revzoo's order within each part, which is upstream's.
    """
    if key.startswith(("text_pos_emb.", "image_pos_emb.")):
        return (0,)
    if key.startswith("vae."):
        return (1,)
    if key == "transformer.pos_emb":
        return (2,)
    layer = _LAYER.match(key)
    if layer:
        reversible_index, fg, sequential_index, zero_one, tail = layer.groups()
        index = int(reversible_index if reversible_index is not None else sequential_index)
        branch = "fg".index(fg) if fg is not None else int(zero_one)
        part = 0 if tail == "scale" else 1 if tail.startswith("fn.norm.") else 2 if tail.startswith("fn.norm_out.") else 3
        return (3, index, branch, part)
    return (4,) if key.startswith("to_logits.") else (5,)


def write_dalle_pytorch_training(model: nn.Module, state: revzoo.TrainingState) -> dict[str, Any]:
    """`opt_state`, `scheduler_state` and `epoch` for train_dalle.py's resume: its optimizer's parameter order.

    Upstream's optimizer indexes its parameters in module order, the order of the exported
    weights with each shared tensor once; train_dalle.py's leaves the frozen VAE out.
    """
    if getattr(model, "revzoo_architecture", None) != "dalle":
        warnings.warn("the training state is left out: train_vae.py checkpoints hold none",
                      revzoo.CheckpointWarning, stacklevel=2)
        return {}
    state = state.for_model(model)
    held = set(state.parameter_names)
    names = {(param.data_ptr(), param.numel()): name for name, param in model.named_parameters() if name in held}
    weights = write_dalle_pytorch(model)["weights"].values()
    order = dict.fromkeys(names[key] for key in ((tensor.data_ptr(), tensor.numel()) for tensor in weights)
                          if key in names)
    return {"opt_state": state.indexed(list(order)), "scheduler_state": state.scheduler, "epoch": state.epoch}


def write_dalle_pytorch(model: nn.Module) -> dict[str, Any]:
    """Returns the training-script dict (hparams, vae_params, weights, ...) for a revzoo "dalle" model.

    A "discrete-vae" model gives train_vae.py's dict instead.
    """
    if getattr(model, "revzoo_architecture", None) == "discrete-vae":
        return write_train_vae(model)
    config = getattr(model, "revzoo_config", None)
    if getattr(model, "revzoo_architecture", None) != "dalle" or config is None:
        _fail("dalle-pytorch export needs a revzoo 'dalle' or 'discrete-vae' model (made by revzoo.create or revzoo.load)")
    config = {**DEFAULTS, **config}
    for name in ("conv_kernel_size", "conv_dilation", "ff_mult"):
        if config[name] != DEFAULTS[name]:
            _fail(f"DALLE-pytorch's DALLE has no {name} option; only {name}={DEFAULTS[name]} can be exported")
    if config["vae"] != "discrete":
        _fail("DALLE-pytorch checkpoints need their VAE; export is supported only for vae='discrete'")
    form = revzoo.get_form(model)
    weights: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("transformer.layers.blocks."):
            weights[_upstream_layer_key(key, form, config["shift_tokens"])] = value
        elif key in ("image_pos_emb.row", "image_pos_emb.col"):
            shape = (1, -1, 1, value.shape[-1]) if key.endswith("row") else (1, 1, -1, value.shape[-1])
            weights[f"image_pos_emb.weights_{int(key.endswith('col'))}"] = value.reshape(shape)
        else:
            weights[{v: k for k, v in _TOP.items()}.get(key, key)] = value
    if config["rotary_emb"]:
        table = dalle_rotary_table(config["dim_head"], config["text_seq_len"] + 1, config_side(config))
        weights["transformer.pos_emb"] = table.to(weights["to_logits.1.weight"].dtype)
    if config["share_input_output_emb"]:
        for name in ("text_emb", "image_emb"):
            weights[f"{name}.linear.weight"] = weights["to_logits.1.weight"]
            weights[f"{name}.linear.bias"] = weights["to_logits.1.bias"]
    weights = dict(sorted(weights.items(), key=lambda item: _upstream_rank(item[0])))
    hparams = {name: config[name] for name in _COPIED_HPARAMS}
    hparams.update(reversible=form == "reversible", attn_types=tuple(config["attn_types"]),
                   shared_attn_ids=None if config["shared_attn_ids"] is None else tuple(config["shared_attn_ids"]),
                   shared_ff_ids=None if config["shared_ff_ids"] is None else tuple(config["shared_ff_ids"]))
    vae_params = {name: config[ours] for name, ours in _VAE_PARAM_NAMES.items()}
    return {"hparams": hparams, "vae_params": vae_params, "epoch": 0, "version": "1.6.6",
            "vae_class_name": "DiscreteVAE", "weights": weights}
