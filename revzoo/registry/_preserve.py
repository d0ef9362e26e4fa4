"""reversibilize: a trained sequential model into a reversible one that computes nearly the same function.

After MEFT (Liao, Tan, Monz, NeurIPS 2023): each pretrained block, both residual sub-layers as the
sequential form runs them, becomes `F`; a zero-initialised adapter is `G`; the coupling is
`y1 = λ·x1 + F(x2)`, `y2 = β·x2 + G(y1)` with the streams swapped after each block. Starting the
streams as `(0, x)` and reading the output from the stream `F` wrote last, the converted stack equals
the pretrained one but for terms of order λβ, and trains with activation memory flat in depth.
Exact arithmetic (`exact=True`, the default) keeps inversion bitwise at the small scales this needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..engine import BottleneckAdapter, Coupling, ReversibleSequence, named_stacks
from ..errors import ConfigError
from ._registry import get_architecture

__all__ = ["preserving_coupling", "reversibilize"]


def preserving_coupling(scale: float) -> Coupling:
    """Returns MEFT's coupling at λ = β = `scale`: swapped streams starting as (0, x), output from `F`."""
    return Coupling((scale, scale), swap=True, output="f", start="zero")


def _stream_widths(model: nn.Module, stacks: dict[str, ReversibleSequence], inputs: tuple[tuple, dict]) -> dict[str, int]:
    """Runs `model` once on `inputs` and returns the last dimension of each stack's stream."""
    widths: dict[str, int] = {}

    def recorder(name: str):
        def hook(stack: ReversibleSequence, args: tuple, kwargs: dict) -> None:
            stream = args[0] if stack.layout is None else stack.layout.split(args[0])[0]
            widths[name] = stream.shape[-1]

        return hook

    handles = [stack.register_forward_pre_hook(recorder(name), with_kwargs=True) for name, stack in stacks.items()]
    try:
        with torch.no_grad():
            args, kwargs = inputs
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(stacks) - set(widths))
    if missing:
        raise ConfigError(f"the example call never reached stack(s) {missing}; pass example_inputs that run them")
    return widths


def reversibilize(
    model: nn.Module,
    *,
    scale: float = 0.125,
    adapter_dim: int = 16,
    exact: bool = True,
    example_inputs: tuple[tuple, dict] | None = None,
) -> nn.Module:
    """Converts `model` in place into the reversible form that keeps its sequential form's function; returns it.

    Every ReversibleSequence gets a `BottleneckAdapter` per block (zero at first) and MEFT's coupling at
    λ = β = `scale` (see `preserving_coupling`). The model's outputs move by terms of order `scale**2`,
    so a trained model keeps its accuracy, and fine-tuning it runs with activation memory flat in
    depth. `exact=True` needs `scale` a power of two (1/2 ... 1/256) and makes inversion bitwise.
    `example_inputs` (`(args, kwargs)`) is one call that reaches every stack, to learn the streams'
    widths; by default the architecture's registered example.

    `model.form = "sequential"` afterwards runs the original function again, ignoring the adapters.

    Example:
        >>> model = revzoo.create("vit-tiny", depth=2)        # a trained sequential model
        >>> model = revzoo.reversibilize(model, scale=0.125)  # same predictions, memory flat in depth
    """
    stacks = named_stacks(model)
    if not stacks:
        raise ConfigError(f"{type(model).__name__} contains no revzoo.ReversibleSequence to convert")
    if any(stack.has_adapters for stack in stacks.values()):
        raise ConfigError("this model already has adapters: it was converted by reversibilize before")
    if isinstance(adapter_dim, bool) or not isinstance(adapter_dim, int) or adapter_dim < 1:
        raise ConfigError(f"adapter_dim must be a positive integer, got {adapter_dim!r}")
    try:
        coupling = preserving_coupling(scale)
        if exact:
            coupling.shifts()
    except ValueError as err:
        raise ConfigError(str(err)) from err
    architecture = getattr(model, "revzoo_architecture", None)
    spec = get_architecture(architecture) if architecture is not None else None
    if spec is not None and spec.not_preservable:
        raise ConfigError(f"{spec.name!r} cannot be converted preserving its function: {spec.not_preservable}")
    if example_inputs is None:
        if spec is None or spec.example_inputs is None:
            raise ConfigError("pass example_inputs=(args, kwargs): this model's architecture registers no example call")
        example_inputs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    forms = {name: stack.form for name, stack in stacks.items()}
    for stack in stacks.values():
        stack.form = "sequential"
    try:
        widths = _stream_widths(model, stacks, example_inputs)
    finally:
        for name, stack in stacks.items():
            stack.form = forms[name]
    for name, stack in stacks.items():
        parameter = next(stack.parameters(), None)
        options: dict[str, Any] = {"device": parameter.device, "dtype": parameter.dtype} if parameter is not None else {}
        stack.set_adapters([BottleneckAdapter(widths[name], adapter_dim, **options) for _ in stack.blocks])
        stack.set_coupling(coupling, exact)
        stack.form = "reversible"
    return model
