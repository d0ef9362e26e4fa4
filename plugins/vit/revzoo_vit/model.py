"""RevViT: a timm VisionTransformer whose blocks run through revzoo.ReversibleSequence.

Everything outside the blocks is timm's own: the modules and parameters are the wrapped
model's objects, and `_pos_embed`, `pool`, `forward_head`, `get_classifier`,
`reset_classifier` and `no_weight_decay` are timm's methods, reused as they are (they
read only attributes that RevViT carries over). Each timm `Block` becomes one reversible
block `(f, g)` = (`AttentionBranch`, `MlpBranch`), which reference the Block's own
submodules. The sequential form therefore computes exactly timm's function.

Under torch.fx the reversible stack is one node (timm's tracers treat it as a leaf module,
others call it through `run_blocks`), and `tap_blocks` routes chosen block outputs through
`block_outputs[i]`, which forward hooks and fx graphs see (timm's "hook" and "fx" features).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from timm.layers import register_notrace_module
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

import revzoo

from .branches import (
    ATTENTION_PARTS,
    MASK_ROUTES,
    MLP_PARTS,
    SUPPORTED_TIMM,
    AttentionBranch,
    MlpBranch,
    accepts_attention_mask,
)

__all__ = [
    "INIT_MODES", "MASK_ROUTES", "STACK_PREFIX", "TIMM_ATTRIBUTES", "TIMM_MODULES", "RevViT", "check_supported_vit",
    "run_blocks",
]

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
INIT_MODES = ("", "jax", "jax_nlhb", "moco", "reset")  # timm's VisionTransformer.init_weights modes

# timm's tracers (its fx tests, FeatureGraphNet, timm.layers.create_feature_extractor) call the stack as one
# call_module node: its forward is one autograd Function chain, whose control flow fx cannot trace.
register_notrace_module(revzoo.ReversibleSequence)


def run_blocks(
    stack: revzoo.ReversibleSequence, x: torch.Tensor, taps: tuple[int, ...], kwargs: dict[str, Any]
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Returns the stack's output, or (with `taps`) its outputs after the blocks in `taps` followed by its output.

    One node in a torch.fx graph (`torch.fx.wrap`, below), for every tracer: the tapped run, and
    the plain run under a tracer that would otherwise trace into the stack.
    """
    if not taps:
        return stack(x, **kwargs)
    last = len(stack.blocks) - 1
    runs = sorted({*taps, last})
    outputs = dict(zip(runs, stack.intermediates(x, runs, **kwargs)))
    return (*(outputs[index] for index in taps), outputs[last])


torch.fx.wrap("run_blocks")


def _traces_into(x: Any, stack: nn.Module) -> bool:
    """Returns whether `x` is being traced by a torch.fx tracer that would trace into `stack`, not call it."""
    if not isinstance(x, torch.fx.Proxy):
        return False
    tracer = x.tracer
    return not tracer.is_leaf_module(stack, tracer.path_of_module(stack))


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
        self.blocks = self._stack([(AttentionBranch(block), MlpBranch(block)) for block in vit.blocks], form, execution)
        for name in TIMM_TAIL:
            setattr(self, name, getattr(vit, name))
        # Called on the outputs after the blocks chosen by tap_blocks, so that forward hooks and torch.fx see
        # them (timm's FeatureHookNet and FeatureGraphNet); no parameters, so the state dict is unchanged.
        self.block_outputs = nn.ModuleList(nn.Identity() for _ in vit.blocks)
        self.tapped: tuple[int, ...] = ()
        # timm's, naming those modules (timm's feature wrappers read it).
        self.feature_info = [dict(info, module=f"block_outputs.{i}") for i, info in enumerate(vit.feature_info)]
        # The wrapped model, not a submodule (its tensors are ours already): to_timm hands it back.
        object.__setattr__(self, "timm_model", vit)

    def _stack(self, pairs: list[tuple[nn.Module, nn.Module]], form: str, execution: str) -> revzoo.ReversibleSequence:
        # a timm without attn_mask is refused in forward_features, not here
        return revzoo.ReversibleSequence(pairs, routes=MASK_ROUTES, form=form, execution=execution)

    def _remember(self, **config: Any) -> None:
        """Records a change of architecture in revzoo_config, so that revzoo.save/load rebuild the changed model."""
        if getattr(self, "revzoo_config", None) is not None:
            self.revzoo_config.update(config)

    def synced_timm_model(self) -> VisionTransformer:
        """Returns the wrapped timm VisionTransformer brought up to date with this model (shared tensors).

        Modules replaced since wrapping (by reset_classifier, set_input_size, pruning) and the
        train/eval mode are carried over; to_timm and init_weights go through it.
        """
        vit = self.timm_model
        for name in TIMM_MODULES:
            setattr(vit, name, getattr(self, name))
        for name in ("num_classes", "global_pool", "_model_args", "_traits"):
            if hasattr(self, name):
                setattr(vit, name, getattr(self, name))
        vit.blocks = vit.blocks[: len(self.blocks.blocks)]
        for block, (attention, mlp) in zip(vit.blocks, self.branches()):
            for name in ATTENTION_PARTS:
                setattr(block, name, getattr(attention, name))
            for name in MLP_PARTS:
                setattr(block, name, getattr(mlp, name))
        vit.train(self.training)
        return vit

    # timm's own code, reused unchanged.
    _pos_embed = VisionTransformer._pos_embed
    pool = VisionTransformer.pool
    forward_head = VisionTransformer.forward_head
    get_classifier = VisionTransformer.get_classifier
    no_weight_decay = VisionTransformer.no_weight_decay
    get_intermediate_layers = VisionTransformer.get_intermediate_layers  # calls forward_intermediates below

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

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def _mask_kwargs(self, attn_mask: torch.Tensor | None, is_causal: bool) -> dict[str, Any]:
        if isinstance(attn_mask, torch.fx.Proxy) or isinstance(is_causal, torch.fx.Proxy):
            # torch.fx traces forward's arguments as the graph's inputs: pass them on, AttentionBranch reads them
            return {"attn_mask": attn_mask, "is_causal": is_causal}
        mask_kwargs: dict[str, Any] = {}
        if attn_mask is not None:
            mask_kwargs["attn_mask"] = attn_mask
        if is_causal:
            mask_kwargs["is_causal"] = True
        if mask_kwargs and not self.supports_attn_mask:
            raise TypeError("this timm version's Attention takes no attn_mask/is_causal; upgrade timm (1.0.31 does)")
        return mask_kwargs

    def forward_features(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Embeddings, the reversible stack, final norm: timm's forward_features with the blocks swapped.

        The outputs after the blocks chosen by `tap_blocks` also go through `block_outputs[i]`.
        """
        x = self._embed(x)
        kwargs = self._mask_kwargs(attn_mask, is_causal)
        if not self.tapped and not _traces_into(x, self.blocks):
            return self.norm(self.blocks(x, **kwargs))
        outputs = run_blocks(self.blocks, x, self.tapped, kwargs)
        if not self.tapped:
            return self.norm(outputs)
        for position, index in enumerate(self.tapped):
            self.block_outputs[index](outputs[position])
        return self.norm(outputs[-1])

    def tap_blocks(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        """Makes forward also call `block_outputs[i]` on the output after each block in `indices`; returns them.

        `indices` are timm's (the last n blocks for an int, all for None, those listed
        otherwise); an empty list stops tapping. A tapped output is the block's token
        output, as timm's `blocks.{i}` gives (prefix tokens included; in the reversible
        form, the mean of the two streams), for forward hooks and torch.fx feature
        extraction (timm's `feature_cls="hook"` and `"fx"`). Under "invert" the
        tapped forward keeps the two streams after each tapped block for backward, as
        `forward_intermediates` does.
        """
        if isinstance(indices, (list, tuple)) and not indices:
            self.tapped = ()
            return []
        try:
            take, _ = feature_take_indices(len(self.blocks.blocks), indices)
        except AssertionError as err:  # timm's check of the indices
            raise IndexError(f"block indices {indices!r}: {err}") from err
        self.tapped = tuple(sorted(set(take)))
        return list(self.tapped)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.forward_head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]] | dict[str, Any]:
        """timm's forward_intermediates: the features, and the token features after the blocks in `indices`.

        Arguments and return values are timm's (`indices`: the last n blocks for an int, all
        for None, those listed otherwise). In the reversible form a block's output is the mean
        of the two streams after it, what a model of the first blocks returns; with gradients
        on, the reversible form runs through plain autograd here, since outputs taken from
        the middle of the chain cannot be recomputed by inversion (forward keeps "invert").
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; use 'NCHW' or 'NLC'")
        depth = len(self.blocks.blocks)
        take_indices, max_index = feature_take_indices(depth, indices)
        last = max_index if stop_early else depth - 1
        batch, _, height, width = x.shape
        runs = sorted({*take_indices, last})
        outputs = dict(zip(runs, self.blocks.intermediates(self._embed(x), runs, **self._mask_kwargs(attn_mask, is_causal))))
        intermediates = [self.norm(outputs[i]) if norm else outputs[i] for i in sorted(set(take_indices))]
        # timm's post-processing, as in VisionTransformer.forward_intermediates.
        prefix_tokens = None
        if self.num_prefix_tokens:
            prefix_tokens = [y[:, : self.num_prefix_tokens] for y in intermediates]
            intermediates = [y[:, self.num_prefix_tokens :] for y in intermediates]
        if output_fmt == "NCHW":
            rows, cols = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(batch, rows, cols, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if output_dict:
            result: dict[str, Any] = {"image_intermediates": intermediates}
            if prefix_tokens is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix_tokens
            if not intermediates_only:
                result["image_features"] = self.norm(outputs[last])
            return result
        if return_prefix_tokens and prefix_tokens is not None:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(outputs[last]), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """timm's prune_intermediate_layers: drops the blocks after the last of `indices` (and the norm, the head).

        Returns the absolute indices kept. revzoo_config records the new depth and head, so a
        pruned model saves and loads as it is.
        """
        take_indices, max_index = feature_take_indices(len(self.blocks.blocks), indices)
        old, kept = self.blocks, self.blocks.blocks[: max_index + 1]
        self.tapped = tuple(index for index in self.tapped if index <= max_index)
        self.blocks = self._stack([(block.f, block.g) for block in kept], old.form, old.execution)
        self.blocks.set_coupling(old.coupling, old.exact)
        if old.has_adapters:
            self.blocks.set_adapters([block.adapter for block in kept])
        self._remember(depth=max_index + 1)
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        if prune_norm or prune_head:
            # timm's two switches: final_norm=False drops both norms, fc_norm picks where a kept one sits.
            has_norm, has_fc_norm = (not isinstance(module, nn.Identity) for module in (self.norm, self.fc_norm))
            self._remember(final_norm=has_norm or has_fc_norm, fc_norm=has_fc_norm)
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for the memory-saving path, which in RevViT is the "invert" execution.

        `enable=True` sets execution "invert": the reversible form stores no block activations
        and backward recomputes them by inversion (timm would checkpoint each block; inversion
        keeps memory flat in depth). `enable=False` sets "autograd": the same function and
        gradients, activations stored. The sequential form stores its activations either way.
        A patch embedding with its own checkpointing (hybrid ViTs) is switched too, as in timm.
        """
        self.execution = "invert" if enable else "autograd"
        if hasattr(self.patch_embed, "set_grad_checkpointing"):
            self.patch_embed.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        """Whether backward recomputes the blocks instead of storing them: the reversible form, "invert" execution."""
        return self.form == "reversible" and self.execution == "invert"

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self.set_grad_checkpointing(enable)

    def set_input_size(
        self,
        img_size: int | tuple[int, int] | None = None,
        patch_size: int | tuple[int, int] | None = None,
    ) -> None:
        """timm's set_input_size: a new image (and patch) size, resampling the position embedding."""
        VisionTransformer.set_input_size(self, img_size=img_size, patch_size=patch_size)
        self._remember(img_size=list(self.patch_embed.img_size))
        if patch_size is not None:
            self._remember(patch_size=list(self.patch_embed.patch_size))

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's init_weights, run by timm on the wrapped model: the same draws as timm's model with the same seed."""
        if mode not in INIT_MODES:
            raise ValueError(f"unknown init mode {mode!r}; timm's are {', '.join(map(repr, INIT_MODES))}")
        self.synced_timm_model().init_weights(mode, needs_reset=needs_reset)

    def branches(self) -> list[tuple[AttentionBranch, MlpBranch]]:
        """Returns the (f, g) pair of every block, in order."""
        return [(block.f, block.g) for block in self.blocks.blocks]

