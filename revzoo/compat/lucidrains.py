"""The `reversible.py` of DALLE-pytorch and lie-transformer-pytorch, on revzoo's engine: swap one import.

    from revzoo.compat.lucidrains import ReversibleSequence, SequentialSequence

Same signatures, arguments, outputs and state-dict keys as the seed files; the gradients are
revzoo's (equal to plain autograd's), also where the seeds' own backward is wrong: inputs that
do not require grad, context tensors that do, shared modules.

- `args_route={name: ((to_f, to_g),) * depth}` sends keyword arguments per block, as the seeds
  do. Unlike the seeds, a keyword argument that `args_route` does not name is refused, not
  silently dropped; with no `args_route`, keyword arguments reach every `f` and `g` (the Lie seed).
- Tuple data (the Lie seed): when the stack is called with a tuple, element 1 is the stream
  and the other elements are context; `f` and `g` receive the whole tuple and return one, whose
  element 1 is the residual. Context leaves the stack as it came in.
- `layer_dropout`, declared and ignored by the seeds, must be 0: a non-zero value is refused
  rather than ignored.
- Both classes are revzoo stacks: `stack.form` and `stack.execution` switch them, and
  `revzoo.check_reversible` checks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import torch
from torch import nn

from ..engine import ReversibleSequence as _EngineSequence
from ..engine import StreamLayout
from ..engine._routes import RouteTable

__all__ = ["ReversibleSequence", "SequentialSequence"]

STREAM_INDEX = 1  # the Lie seed's `dim = 1`: (coords, values, mask, edges)
_FIELD = "_seed_field_"
ArgsRoute = Mapping[str, Sequence[tuple[bool, bool]]]


@cache
def _tuple_layout(length: int) -> StreamLayout:
    return StreamLayout(stream=f"{_FIELD}{STREAM_INDEX}", fields=tuple(f"{_FIELD}{i}" for i in range(length)))


class SeedBranch(nn.Module):
    """One `f` or `g` of a seed block, under `.net` as the seeds' `Deterministic` wrapper kept it (same keys).

    Called with the stream and, for tuple data, the context fields; calls `net` the seed's way.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        fields = {int(name[len(_FIELD):]): kwargs.pop(name) for name in list(kwargs) if name.startswith(_FIELD)}
        if not fields:
            return self.net(x, **kwargs)
        data = tuple(x if index == STREAM_INDEX else fields[index] for index in range(len(fields) + 1))
        return self.net(data, **kwargs)[STREAM_INDEX]


def _routes(args_route: ArgsRoute | None, depth: int) -> list[dict] | None:
    """Returns revzoo's per-block routes for the seeds' `{name: ((to_f, to_g), ...) per block}`."""
    if not args_route:
        return None
    if not isinstance(args_route, Mapping):
        raise TypeError(f"args_route must be a dict {{name: ((to_f, to_g), ...)}}, got {type(args_route).__name__}")
    per_block: list[dict] = [{} for _ in range(depth)]
    for name, routes in args_route.items():
        if isinstance(routes, (str, bytes)) or not isinstance(routes, Sequence) or len(routes) != depth:
            raise ValueError(
                f"args_route[{name!r}] must give (to_f, to_g) for each of the {depth} blocks, got {routes!r:.80}"
            )
        for index, route in enumerate(routes):
            if not (isinstance(route, (tuple, list)) and len(route) == 2 and all(isinstance(b, bool) for b in route)):
                raise ValueError(f"args_route[{name!r}][{index}] must be (to_f, to_g) booleans, got {route!r}")
            if any(route):
                per_block[index][name] = tuple(route)
    return per_block


def _pairs(blocks: Iterable[Any]) -> list[tuple[SeedBranch, SeedBranch]]:
    pairs = []
    for index, block in enumerate(blocks):
        pair = list(block) if isinstance(block, (tuple, list, nn.ModuleList)) else None
        if pair is None or len(pair) != 2:
            raise TypeError(f"blocks[{index}] must be an (f, g) pair of nn.Modules, got {type(block).__name__}")
        pairs.append((SeedBranch(pair[0]), SeedBranch(pair[1])))
    return pairs


@cache
def _everywhere(names: frozenset[str], depth: int) -> RouteTable:
    return RouteTable({name: "both" for name in names}, depth)


class _SeedStack(_EngineSequence):
    """What both seed classes share: the seeds' blocks and `args_route`, tuple data, keyword arguments."""

    def __init__(self, blocks: Iterable[Any], args_route: ArgsRoute | None, form: str, execution: str) -> None:
        pairs = _pairs(blocks)
        super().__init__(pairs, routes=_routes(args_route, len(pairs)), form=form, execution=execution)
        self.args_route = args_route or {}

    def forward(self, x: Any, **kwargs: Any) -> Any:
        self.layout = _tuple_layout(len(x)) if isinstance(x, tuple) else None
        if not self.args_route:  # the Lie seed: keyword arguments reach every f and g
            self.routes = _everywhere(frozenset(kwargs), len(self.blocks))
        return super().forward(x, **kwargs)


class ReversibleSequence(_SeedStack):
    """The seeds' `ReversibleSequence(blocks, args_route={})`: streams `(x, x)`, output their mean.

    State-dict keys are the seeds' `blocks.{i}.f.net.*` and `blocks.{i}.g.net.*`.
    """

    def __init__(self, blocks: Iterable[Any], args_route: ArgsRoute | None = None, *,
                 form: str = "reversible", execution: str = "invert") -> None:
        super().__init__(blocks, args_route, form, execution)


class SequentialSequence(_SeedStack):
    """The seeds' `SequentialSequence(layers, args_route={}, layer_dropout=0.)`: `x + f(x)`, then `x + g(x)`.

    State-dict keys are DALLE's seed's `layers.{i}.0.*` and `layers.{i}.1.*`; those and the Lie seed's
    `blocks.{i}.0.*`, `blocks.{i}.1.*` load, so the seeds' checkpoints keep loading.
    `layer_dropout` must be 0 (the seeds declare it and ignore it).
    """

    def __init__(self, layers: Iterable[Any], args_route: ArgsRoute | None = None, layer_dropout: float = 0.0, *,
                 form: str = "sequential", execution: str = "invert") -> None:
        if layer_dropout != 0:
            raise ValueError(
                f"layer_dropout={layer_dropout!r} is not supported: the seed files declare it and ignore it, and "
                "revzoo does not silently ignore it; pass layer_dropout=0."
            )
        super().__init__(layers, args_route, form, execution)
        self.layer_dropout = 0.0
        self._register_state_dict_hook(_to_seed_keys)
        self.register_load_state_dict_pre_hook(_from_seed_keys)


# the sequential seeds' keys `layers.{i}.0|1.*` (DALLE's; the Lie seed's `blocks.{i}.0|1.*` load too)
# <-> the engine's `blocks.{i}.f|g.net.*`
_ENGINE_KEY = re.compile(r"blocks\.(\d+)\.([fg])\.net\.")
_SEED_KEY = re.compile(r"(?:layers|blocks)\.(\d+)\.([01])\.")


def _rename(state_dict: dict[str, Any], prefix: str, pattern: re.Pattern, replace: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and pattern.match(k, len(prefix))]:
        rest = key[len(prefix):]
        state_dict[prefix + pattern.sub(replace, rest, count=1)] = state_dict.pop(key)


def _to_seed_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    _rename(state_dict, prefix, _ENGINE_KEY, lambda m: f"layers.{m[1]}.{'0' if m[2] == 'f' else '1'}.")


def _from_seed_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    _rename(state_dict, prefix, _SEED_KEY, lambda m: f"blocks.{m[1]}.{'f' if m[2] == '0' else 'g'}.net.")
