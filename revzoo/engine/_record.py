"""A model's couplings, exactness and adapters as JSON, so that a checkpoint can rebuild them."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._adapter import BottleneckAdapter
from ._coupling import Coupling
from ._sequence import named_stacks

__all__ = ["apply_coupling_record", "coupling_record"]


def coupling_record(model: nn.Module) -> dict[str, Any] | None:
    """Returns, per stack, what differs from the plain coupling (None when nothing does).

    Raises ValueError for adapters revzoo cannot rebuild (anything but BottleneckAdapter).
    """
    record = {}
    for name, stack in named_stacks(model).items():
        entry: dict[str, Any] = {}
        if stack.coupling != Coupling() or stack.exact:
            c = stack.coupling
            entry.update(scales=list(c.scales), swap=c.swap, output=c.output, start=c.start, exact=stack.exact)
        if stack.has_adapters:
            adapters = [block.adapter for block in stack.blocks]
            if not all(isinstance(a, BottleneckAdapter) for a in adapters):
                where = name or "<root>"
                raise ValueError(f"stack {where!r} has adapters other than BottleneckAdapter; save cannot rebuild them")
            entry["adapter"] = {"width": adapters[0].width, "dim": adapters[0].dim}
        if entry:
            record[name] = entry
    return record or None


def apply_coupling_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Gives `model`'s stacks the couplings and adapters of `record` (from `coupling_record`); returns `model`.

    The form is left as it is. Raises ValueError naming what does not fit.
    """
    if not isinstance(record, dict):
        raise ValueError(f"a coupling record is a JSON object, got {type(record).__name__}")
    stacks = named_stacks(model)
    unknown = sorted(set(record) - set(stacks))
    if unknown:
        raise ValueError(f"the coupling record names stacks {unknown} that {type(model).__name__} does not have")
    for name, entry in record.items():
        stack = stacks[name]
        try:
            if "scales" in entry:
                coupling = Coupling(tuple(entry["scales"]), entry["swap"], entry["output"], entry["start"])
                stack.set_coupling(coupling, entry["exact"])
            if "adapter" in entry:
                parameter = next(stack.parameters(), None)
                options = {"device": parameter.device, "dtype": parameter.dtype} if parameter is not None else {}
                width, dim = entry["adapter"]["width"], entry["adapter"]["dim"]
                stack.set_adapters([BottleneckAdapter(width, dim, **options) for _ in stack.blocks])
        except (KeyError, TypeError) as err:
            raise ValueError(f"stack {name or '<root>'!r}: malformed coupling record {entry!r} ({err})") from err
    return model
