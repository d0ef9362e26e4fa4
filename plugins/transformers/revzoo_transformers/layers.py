"""The way into a transformers model's layer loop: its layer list, replaced by one that defers the loop to revzoo.

Every transformers model runs its layers as `for layer in self.layers[:n]: hidden = layer(hidden, ...)`
(names differ: `h`, `layer`, `decoder.layers`). `ReversibleLayers` is that list, holding the same
layers under the same keys, so state dicts, PEFT, FSDP and `save_pretrained` see the model they know.
In the sequential form it iterates the layers themselves: the pretrained function, bitwise. In the
reversible form it yields stand-ins that record each layer's call, hand the hidden states on unchanged,
and at the last layer run the recorded calls as one `revzoo.ReversibleSequence`, so whatever the
model passes to each layer (masks per layer type, rotary embeddings, a cache) reaches that layer there.
No model file is copied or patched: only the loop's list is replaced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

import revzoo

__all__ = ["LayerBranch", "LoopState", "ReversibleLayers", "ZeroBranch", "build_stack"]


class LayerBranch(nn.Module):
    """`F` of block `index`: the pretrained layer minus its input, called as the model called it.

    The layer stays owned by the model's layer list (its keys do not move); this branch reaches it
    without registering it, and lists it among its modules so the engine finds its parameters.
    """

    def __init__(self, layer: nn.Module, index: int) -> None:
        super().__init__()
        self.__dict__["layer"] = layer  # not a submodule: the model's layer list owns it
        self.index = index

    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True):
        memo = set() if memo is None else memo
        yield from super().named_modules(memo, prefix, remove_duplicate)
        yield from self.layer.named_modules(memo, f"{prefix}.layer" if prefix else "layer", remove_duplicate)

    def forward(self, hidden: torch.Tensor, calls: Sequence[tuple[tuple, dict]]) -> torch.Tensor:
        args, kwargs = calls[self.index]
        output = self.layer(hidden, *args, **kwargs)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"revzoo: layer {self.index} ({type(self.layer).__name__}) returned {type(output).__name__}, not the "
                "hidden states tensor that transformers 5 layers return; this model family is not supported"
            )
        return output - hidden


class ZeroBranch(nn.Module):
    """`G` of a block before `reversibilize` gives it an adapter: adds nothing."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden)


def build_stack(layers: Sequence[nn.Module]) -> revzoo.ReversibleSequence:
    """Returns the stack whose block `i` calls `layers[i]` (in the sequential form; reversibilize couples it)."""
    blocks = [(LayerBranch(layer, index), ZeroBranch()) for index, layer in enumerate(layers)]
    return revzoo.ReversibleSequence(blocks, routes={"calls": "f"}, form="sequential")


class _Pass:
    """One run of the model's layer loop in the reversible form: the calls recorded so far."""

    def __init__(self, stack: revzoo.ReversibleSequence, indices: list[int]) -> None:
        if indices != list(range(len(stack.blocks))):
            raise RuntimeError(
                f"revzoo: the model ran layers {indices} of its {len(stack.blocks)}; the reversible form runs all of "
                "them as one stack (set revzoo.set_form(model, 'sequential') to run a subset)"
            )
        self.stack = stack
        self.hidden: torch.Tensor | None = None
        self.calls: list[tuple[tuple, dict]] = []

    def call(self, index: int, args: tuple, kwargs: dict) -> Any:
        if args:
            hidden, args = args[0], args[1:]
        else:
            hidden = kwargs.pop("hidden_states")
        if index == 0:
            self.hidden = hidden
        elif hidden is not self.hidden:
            raise RuntimeError(
                "revzoo: this model changes the hidden states between its layers, so its loop cannot run as one "
                "reversible stack; this model family is not supported"
            )
        self.calls.append((args, kwargs))
        if index < len(self.stack.blocks) - 1:
            return hidden
        return self.stack(hidden, calls=self.calls)


class _Deferred:
    """Stands in for layer `index` in the loop: the model may read the layer's attributes (`attention_type`)."""

    def __init__(self, run: _Pass, index: int, layer: nn.Module) -> None:
        self._run, self._index, self._layer = run, index, layer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run.call(self._index, args, kwargs)


class LoopState:
    """How many calls of the module running the layer loop are under way: only its loop gets the stand-ins."""

    def __init__(self) -> None:
        self.depth = 0

    def enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.depth += 1

    def leave(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.depth -= 1


class ReversibleLayers(nn.ModuleList):
    """The model's layer list, with its layers under the same keys, whose loop `stack` runs in the reversible form.

    Only iteration inside the forward of the module that owns the list (`state.depth > 0`) yields the
    stand-ins; anywhere else (freezing layers, FSDP wrapping) the list gives the layers themselves.
    """

    def __init__(self, layers: Sequence[nn.Module], stack: revzoo.ReversibleSequence, state: LoopState,
                 indices: list[int] | None = None) -> None:
        super().__init__(layers)
        self.__dict__["stack"] = stack  # registered on the model beside this list, not inside it (len, keys)
        self.__dict__["state"] = state
        self.__dict__["indices"] = list(range(len(layers))) if indices is None else indices

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            layers = list(self._modules.values())
            return ReversibleLayers(layers[index], self.stack, self.state, self.indices[index])
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Any]:
        layers = list(self._modules.values())
        if self.stack.form == "sequential" or self.state.depth == 0:
            return iter(layers)
        run = _Pass(self.stack, self.indices)
        return iter([_Deferred(run, index, layer) for index, layer in enumerate(layers)])
