"""reversibilize: a trained sequential model into a reversible one that computes nearly the same function.

After MEFT (Liao, Tan, Monz, NeurIPS 2023): each pretrained block, both residual sub-layers as the
sequential form runs them, becomes `F`; a zero-initialised adapter is `G`; the coupling is
`y1 = λ·x1 + F(x2)`, `y2 = β·x2 + G(y1)` with the streams swapped after each block. Starting the
streams as `(0, x)` and reading the output from the stream `F` wrote last, the converted stack equals
the pretrained one but for terms of order λβ, and trains with activation memory flat in depth.
Exact arithmetic (`exact=True`, the default) keeps inversion bitwise at the small scales this needs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import BottleneckAdapter, Coupling, ReversibleSequence, named_stacks, tensors_in
from ..errors import ConfigError
from ._plugins import loaded_registry
from ._registry import get_architecture
from ._spec import Adapter

__all__ = ["preserving_coupling", "reversibilize"]


def preserving_coupling(scale: float) -> Coupling:
    """Returns MEFT's coupling at λ = β = `scale`: swapped streams starting as (0, x), output from `F`."""
    return Coupling((scale, scale), swap=True, output="f", start="zero")


SCALES = tuple(2.0**-shift for shift in range(1, 9))  # the exact scales, 1/2 ... 1/256, largest first
TOLERANCE = 2e-2  # scale=None: the largest scale whose outputs move by at most this (relative RMS; see README)


def _stream_widths(model: nn.Module, stacks: dict[str, ReversibleSequence], inputs: tuple[tuple, dict]) -> dict[str, int]:
    """Runs `model` once on `inputs` (every stack in the reversible form) and returns the last dimension of each
    stack's stream."""
    widths: dict[str, int] = {}

    def recorder(name: str):
        def hook(stack: ReversibleSequence, args: tuple, kwargs: dict) -> None:
            stream = args[0] if stack.layout is None else stack.layout.split(args[0])[0]
            widths[name] = stream.shape[-1]

        return hook

    handles = [stack.register_forward_pre_hook(recorder(name), with_kwargs=True) for name, stack in stacks.items()]
    try:
        with _forms(stacks, "reversible"), torch.no_grad():
            args, kwargs = inputs
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(stacks) - set(widths))
    if missing:
        raise ConfigError(f"the example call never reached stack(s) {missing}; pass example_inputs that run them")
    return widths


@contextlib.contextmanager
def _forms(stacks: dict[str, ReversibleSequence], form: str) -> Iterator[None]:
    before = {name: stack.form for name, stack in stacks.items()}
    try:
        for stack in stacks.values():
            stack.form = form
        yield
    finally:
        for name, stack in stacks.items():
            stack.form = before[name]


def _outputs(model: nn.Module, inputs: tuple[tuple, dict]) -> list[torch.Tensor]:
    with torch.no_grad():
        args, kwargs = inputs
        return [t.double() for t in tensors_in(model(*args, **kwargs)) if t.is_floating_point()]


def _relative_change(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """The largest relative RMS difference between two calls' floating-point outputs (inf if any is not finite)."""
    worst = 0.0
    for out, ref in zip(outputs, reference):
        change = ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()
        worst = max(worst, change) if math.isfinite(change) else math.inf
    return worst


def _choose_scale(
    model: nn.Module, stacks: dict[str, ReversibleSequence], inputs: tuple[tuple, dict], exact: bool
) -> float:
    """Returns the largest of SCALES whose reversible form changes the example call's outputs by at most TOLERANCE,
    else the smallest; the stacks are left with that coupling."""
    with _forms(stacks, "sequential"):
        reference = _outputs(model, inputs)
    for scale in SCALES:
        for stack in stacks.values():
            stack.set_coupling(preserving_coupling(scale), exact)
        with _forms(stacks, "reversible"):
            change = _relative_change(_outputs(model, inputs), reference)
        if change <= TOLERANCE:
            return scale
    return SCALES[-1]


def _available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _refuse_unallocatable(name: str, blocks: int, width: int, dim: int, parameter: torch.Tensor | None) -> None:
    """Raises ConfigError when a stack's adapters would not fit in the memory this machine has available: trying
    could end in the kernel killing the process (memory is overcommitted and touched only at initialisation)."""
    values = blocks * (2 * width * dim + dim + 3 * width)
    size = values * (parameter.element_size() if parameter is not None else 4)
    available = _available_bytes() if parameter is None or parameter.device.type == "cpu" else None
    if available is not None and size > available:
        raise ConfigError(f"adapter_dim {dim} needs {values:,} adapter parameters ({size / 2**30:.1f} GiB) for stack "
                          f"{name or '<root>'!r} (width {width}), more than the {available / 2**30:.1f} GiB this "
                          "machine has available; adapters are bottlenecks: a few to a few hundred")


def _adapter_for(model: nn.Module) -> Adapter:
    """Returns the registered adapter that converts `model` in place, or raises ConfigError."""
    for adapter in loaded_registry().adapters.values():
        if adapter.accepts is not None and adapter.accepts(model):
            return adapter
    raise ConfigError(
        f"{type(model).__name__} contains no revzoo.ReversibleSequence to convert, and no adapter takes it "
        "(transformers models need the transformers plugin: pip install 'revzoo[transformers]')"
    )


def reversibilize(
    model: nn.Module,
    *,
    scale: float | None = None,
    adapter_dim: int = 16,
    exact: bool = True,
    example_inputs: tuple[tuple, dict] | None = None,
) -> nn.Module:
    """Converts `model` in place into the reversible form that keeps its sequential form's function; returns it.

    Every ReversibleSequence gets a `BottleneckAdapter` per block (zero at first) and MEFT's coupling at
    λ = β = `scale` (see `preserving_coupling`). The model's outputs move by terms of order `scale**2`,
    so a trained model keeps its accuracy, and fine-tuning it runs with activation memory flat in
    depth. `scale=None` chooses the largest of 1/2 ... 1/256 whose outputs on the example call move by
    at most 2e-2 (relative RMS), else 1/256; read it back as `stack.coupling.scales`. `exact=True`
    needs `scale` a power of two and makes inversion bitwise. `example_inputs` (`(args, kwargs)`) is
    one call that reaches every stack; by default the architecture's registered example.

    A model of another library that a registered adapter `accepts` (a transformers PreTrainedModel,
    with the transformers plugin) is converted in place first, keeping its class.
    `revzoo.set_form(model, "sequential")` afterwards runs the original function again, ignoring the adapters.

    Example:
        >>> model = revzoo.create("vit-tiny", depth=2)        # a trained sequential model
        >>> model = revzoo.reversibilize(model, scale=0.125)  # same predictions, memory flat in depth
    """
    if isinstance(adapter_dim, bool) or not isinstance(adapter_dim, int) or adapter_dim < 1:
        raise ConfigError(f"adapter_dim must be a positive integer, got {adapter_dim!r}")
    if scale is not None:
        try:
            coupling = preserving_coupling(scale)
            if exact:
                coupling.shifts()
        except ValueError as err:
            raise ConfigError(str(err)) from err
    stacks = named_stacks(model)
    if not stacks:
        _adapter_for(model).wrap(model, form="sequential")
        stacks = named_stacks(model)
    if any(stack.has_adapters for stack in stacks.values()):
        raise ConfigError("this model already has adapters: it was converted by reversibilize before")
    architecture = getattr(model, "revzoo_architecture", None)
    spec = get_architecture(architecture) if architecture is not None else None
    if spec is not None and spec.not_preservable:
        raise ConfigError(f"{spec.name!r} cannot be converted preserving its function: {spec.not_preservable}")
    if example_inputs is None:
        if spec is None or spec.example_inputs is None:
            raise ConfigError("pass example_inputs=(args, kwargs): this model's architecture registers no example call")
        example_inputs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    widths = _stream_widths(model, stacks, example_inputs)
    adapters = {}  # every stack's, before any stack changes
    for name, stack in stacks.items():
        parameter = next(stack.parameters(), None)
        options: dict[str, Any] = {"device": parameter.device, "dtype": parameter.dtype} if parameter is not None else {}
        _refuse_unallocatable(name, len(stack.blocks), widths[name], adapter_dim, parameter)
        adapters[name] = [BottleneckAdapter(widths[name], adapter_dim, **options) for _ in stack.blocks]
    for name, stack in stacks.items():
        stack.set_adapters(adapters[name])
    if scale is None:
        scale = _choose_scale(model, stacks, example_inputs, exact)
        logging.getLogger("revzoo").info("reversibilize: chose scale %s for %s", scale, type(model).__name__)
    for stack in stacks.values():
        stack.set_coupling(preserving_coupling(scale), exact)
        stack.form = "reversible"
    return model
