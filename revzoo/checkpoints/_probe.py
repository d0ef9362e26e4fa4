"""Probing a file's two forms on a seeded input, at a cost bounded by the bytes the file stores.

The probe runs the model at the file's own config, and a config is a few bytes that can ask
for anything (a Lie-transformer's `liftsamples=10**6`: a 288 TB tensor). Every operation the
probe runs is first run on the meta device, which gives its outputs' sizes without computing
them; the probe stops, with a CheckpointError, before an operation whose outputs would take
the bytes it has produced past a budget of PROBE_BYTES_PER_STORED times the model's own bytes
(at least PROBE_FLOOR). An operation without a meta kernel runs, and its outputs are counted.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only

from ..engine import FORMS
from ..errors import CheckpointError
from ..registry import resolve
from ._checkpoint import load, read_metadata

__all__ = ["PROBE_BYTES_PER_STORED", "PROBE_FLOOR", "probe_forms"]

PROBE_BYTES_PER_STORED = 16  # bytes the probe's operations may produce per byte of the model's parameters and buffers
PROBE_FLOOR = 256 << 20  # what a small file's probe may produce in any case (a tiny Lie-transformer's: 8 MB)


def _bytes(outputs: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor))


def _on_meta(value: Any) -> Any:
    if isinstance(value, torch.device):
        return torch.device("meta")
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    return value


class _ProbeBudget(TorchDispatchMode):
    """Counts the bytes the operations run under it produce, refusing the one that would exceed `budget`."""

    def __init__(self, budget: int, origin: str) -> None:
        super().__init__()
        self.budget, self.origin, self.spent = budget, origin, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        planned = self._planned(func, args, kwargs)
        if planned is not None and self.spent + planned > self.budget:
            self._refuse(func, self.spent + planned)
        outputs = func(*args, **kwargs)
        self.spent += _bytes(outputs) if planned is None else planned
        if self.spent > self.budget:
            self._refuse(func, self.spent)
        return outputs

    @staticmethod
    def _planned(func: Any, args: tuple, kwargs: dict) -> int | None:
        """The bytes `func` would produce, from its meta kernel (None where it has none, or needs data); 0 for a
        view or an in-place operation, whose outputs are its inputs' memory."""
        if all(result.alias_info is not None for result in func._schema.returns):
            return 0
        meta_kwargs = {key: value for key, value in kwargs.items() if key != "generator"}
        if "device" in meta_kwargs:
            meta_kwargs["device"] = "meta"
        try:
            meta_args, meta_kwargs = tree_map_only((torch.Tensor, torch.device), _on_meta, (args, meta_kwargs))
            return _bytes(func(*meta_args, **meta_kwargs))
        except Exception:  # no meta kernel, a data-dependent shape: run it and count what it made
            return None

    def _refuse(self, func: Any, total: int) -> None:
        raise CheckpointError(
            f"{self.origin}: refused to probe: at the file's config the probe's operations would produce {total:,} "
            f"bytes by {getattr(func, '__name__', func)}, beyond its budget of {self.budget:,} ({PROBE_BYTES_PER_STORED} "
            "times the model's own bytes, at least 256 MiB); the config asks for far more work than the file's tensors hold"
        )


def probe_budget(model: torch.nn.Module) -> int:
    """The bytes a probe of `model` may produce: PROBE_BYTES_PER_STORED times its parameters' and buffers'."""
    stored = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return max(PROBE_FLOOR, PROBE_BYTES_PER_STORED * stored)


def probe_forms(path: str | os.PathLike, seed: int = 0, dtype: torch.dtype | str | None = "auto") -> float:
    """Returns the largest difference between the reversible and sequential forms' outputs on a seeded input.

    The model is loaded in `dtype` (as `load` takes it). Raises CheckpointError if the file's
    architecture cannot be probed, or if its config makes the probe cost more than its budget
    (see the module's docstring).
    """
    meta = read_metadata(path)
    spec = resolve(meta["architecture"])[0]
    if spec.example_inputs is None or set(FORMS) - set(spec.forms):
        raise CheckpointError(f"{spec.name!r} cannot be probed: it registers no example_inputs or lacks a form")
    outputs = []
    for form in FORMS:
        model = load(path, form=form, dtype=dtype).eval()
        budget = _ProbeBudget(probe_budget(model), str(path))
        try:
            with torch.no_grad(), budget:
                args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(seed))
                outputs.append(model(*args, **kwargs))
        except (RuntimeError, MemoryError) as err:  # an allocation the meta run could not foresee
            raise CheckpointError(f"{path}: the probe failed: {str(err).splitlines()[0] if str(err) else err!r}") \
                from err
    return (outputs[0].double() - outputs[1].double()).abs().max().item()
