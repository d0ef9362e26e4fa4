"""Building the model a file describes, without trusting the file: checked on the meta device, within a budget.

A file's metadata (or a foreign format's hyperparameters) names the model to build, and a
tiny file can name a huge one (`dim=30000`, `depth=10**9`). So the model is first built on
the meta device, where tensors take no memory, while a budget derived from the file's own
tensors caps what the build may register: a build that registers far more parameters,
buffers or modules than the file could fill stops at once. Only when every tensor fits is
the model built for real, and then its size is that of the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..engine import apply_coupling_record
from ..errors import CheckpointError, RevzooError, UnknownModelError
from ..registry import CheckpointFormat, ImportedCheckpoint, TrainingState, create, resolve
from ._state import TensorSource, check_fit, stored_values

__all__ = ["BUDGET_SLACK", "build_for", "read_with", "registration_budget", "tensor_census"]

# What a build may register beyond what the file holds: a factor for tied weights, derived buffers
# and parameter-free modules, plus a constant for small models (masks and tables of a few MiB).
BUDGET_SLACK = {"tensors": (4, 64), "values": (4, 2**24), "modules": (16, 1024)}
# Errors a builder raises on values it did not expect (a string for a width, a zero head count):
# from a file's config they mean a bad file, not a bug.
_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, ArithmeticError, IndexError, KeyError, AttributeError)


class _OverBudget(Exception):
    """Raised inside a build that exceeds its budget; not a ValueError, so no builder's `except` swallows it."""


def tensor_census(obj: Any, limit: int = 10**6) -> tuple[int, int]:
    """Returns how many tensors a loaded checkpoint object holds (nested containers), and how many values their
    storages hold (each storage once, so expanded views claim no more than the file stores)."""
    tensors = []
    pending, seen = [obj], 0
    while pending and seen < limit:
        item = pending.pop()
        seen += 1
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return len(tensors), stored_values(tensors)


@contextmanager
def registration_budget(tensors: int, values: int, origin: str) -> Iterator[None]:
    """Stops any module construction inside that registers more than the file's tensors could fill (see BUDGET_SLACK)."""
    limits = {key: factor * amount + constant
              for key, amount in (("tensors", tensors), ("values", values), ("modules", tensors))
              for factor, constant in [BUDGET_SLACK[key]]}
    used = dict.fromkeys(limits, 0)

    def spend(**amounts: int) -> None:
        for key, amount in amounts.items():
            used[key] += amount
            if used[key] > limits[key]:
                raise _OverBudget(key)

    def on_tensor(module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is not None:
            spend(tensors=1, values=tensor.numel())

    def on_module(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        spend(modules=1)

    handles = [torch_module.register_module_parameter_registration_hook(on_tensor),
               torch_module.register_module_buffer_registration_hook(on_tensor),
               torch_module.register_module_module_registration_hook(on_module)]
    try:
        yield
    except _OverBudget as over:
        what = {"tensors": "parameters and buffers", "values": "values", "modules": "modules"}[str(over)]
        raise CheckpointError(
            f"{origin}: refused: it describes a model with more than {limits[str(over)]:,} {what}, far more than "
            f"its {tensors:,} tensors ({values:,} values) could fill; its metadata or hyperparameters are wrong"
        ) from None
    finally:
        for handle in handles:
            handle.remove()


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def read_with(fmt: CheckpointFormat, obj: Any, origin: str, options: Mapping[str, Any]) -> ImportedCheckpoint:
    """Returns `fmt.read(obj, **options)`, run within the budget of `obj`'s tensors; a reader's crash on the file is
    a CheckpointError naming the format."""
    tensors, values = tensor_census(obj)
    try:
        with registration_budget(tensors, values, origin):
            imported = fmt.read(obj, **options)
    except RevzooError:
        raise
    except _BUILD_ERRORS as err:
        raise CheckpointError(f"{origin}: format {fmt.name!r} cannot read it: {_first_line(err)}") from err
    if not isinstance(imported, ImportedCheckpoint) or not isinstance(imported.tensors, Mapping) or not (
            imported.training is None or isinstance(imported.training, TrainingState)):
        raise CheckpointError(f"format {fmt.name!r}: its reader returned {type(imported).__name__}, not an "
                              "ImportedCheckpoint holding a mapping of tensors (and a TrainingState or None)")
    return imported


def _few(options: list[str], shown: int = 3) -> str:
    """`option(s) a, b` or, for more than `shown`, `N option(s) a, b, c, ... (k more)`: one readable line (each
    name cut at 60 characters)."""
    names = ", ".join(name if len(name) <= 60 else name[:57] + "..." for name in options[:shown])
    if len(options) <= shown:
        return f"option(s) {names}"
    return f"{len(options)} option(s) {names}, ... ({len(options) - shown} more)"


def _create(origin: str, architecture: Any, form: Any, config: Any, coupling: Any) -> nn.Module:
    """`create` for a config read from a file, then the file's couplings and adapters (see coupling_record).

    Anything the file got wrong is a CheckpointError naming it.
    """
    if not isinstance(config, Mapping) or not all(isinstance(key, str) for key in config):
        raise CheckpointError(f"{origin}: corrupt revzoo metadata: config must be a JSON object, got {config!r:.80}")
    spec = resolve(architecture)[0]
    unknown = sorted(set(config) - set(spec.defaults))
    if unknown and not spec.open_config:
        raise CheckpointError(
            f"{origin}: its config has {_few(unknown)} that {spec.name!r} does not take "
            f"(valid: {', '.join(sorted(spec.defaults))}); was it written for another architecture?"
        )
    try:
        model = create(architecture, form=form, **config)
    except UnknownModelError:
        raise
    except (RevzooError, *_BUILD_ERRORS) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"{origin}: its config does not describe a valid {spec.name!r} model: {_first_line(err)}"
        ) from err
    if coupling:
        try:
            apply_coupling_record(model, coupling)
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{origin}: {_first_line(err)}") from err
    return model


def build_for(
    source: TensorSource,
    origin: str,
    architecture: str,
    form: str | None,
    config: Mapping[str, Any],
    aliases: Mapping[str, str] | None = None,
    coupling: Mapping[str, Any] | None = None,
    real: bool = True,
) -> nn.Module:
    """Returns the model `source`'s tensors fit, built for real (`real`) only after a meta-device build checked them.

    `coupling` is the file's record of couplings and adapters, applied after `create`.

    Raises CheckpointError if the config is invalid, describes a model far larger than the
    tensors, or the tensors do not fit (missing, unexpected, wrong shapes or dtypes).
    """
    values = source.stored if source.stored is not None else sum(_numel(shape) for shape in source.shapes.values())
    with torch.device("meta"), registration_budget(len(source.shapes), values, origin):
        model = _create(origin, architecture, form, config, coupling)
    check_fit(model, source, origin, aliases)
    return _create(origin, architecture, form, config, coupling) if real else model


def _numel(shape: tuple[int, ...]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result
