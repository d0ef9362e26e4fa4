"""`revzoo convert --preserve`: a trained sequential checkpoint into a reversible one of nearly the same function."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..engine import tensors_in
from ..errors import CheckpointError, CheckpointWarning
from ..registry import get_architecture, reversibilize
from ._checkpoint import load, read_metadata, save
from ._directory import pretrained_files
from ._io import check_output, require_file
from ._training import refuse_input_as_training_state, training_state_beside

__all__ = ["convert_preserving"]


def convert_preserving(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    scale: float | None = None,
    adapter_dim: int = 16,
    exact: bool = True,
    overwrite: bool = False,
    max_shard_size: int | str | None = None,
) -> tuple[Path, float | None]:
    """Writes `src`'s model converted by `revzoo.reversibilize`; returns the path and the largest output change.

    The change is measured on the architecture's example call, sequential form against the
    converted model (None when the architecture registers no example). A training state
    beside `src` is not carried (the adapters are new parameters): a CheckpointWarning says so.
    """
    src = Path(src) if Path(src).is_dir() else require_file(src)  # a file, or a Hub directory revzoo.load reads
    check_output(src, dst, overwrite)
    refuse_input_as_training_state(src, training_state_beside(dst))
    check_output(training_state_beside(src), training_state_beside(dst), overwrite)
    recorded = pretrained_files(src)[1] if src.is_dir() else read_metadata(src)
    if recorded.get("form") == "reversible":
        raise CheckpointError(
            f"{src}: is recorded in the reversible form, which is the function its weights were trained in; "
            "--preserve keeps the function of a sequential checkpoint (here it would keep the sequential function "
            "of these weights, which they were not trained for). Convert it with --to sequential first only if "
            "that is the function you mean"
        )
    model = load(src, form="sequential").eval()
    if any(".adapter." in name for name in model.state_dict()):
        raise CheckpointError(f"{src}: already converted (it has adapters); convert the original sequential file")
    spec = get_architecture(model.revzoo_architecture)

    def output() -> torch.Tensor | None:
        if spec.example_inputs is None:
            return None
        args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(*args, **kwargs)
        return next(t for t in tensors_in(out) if t.is_floating_point()).double()  # a tensor, tuple or ModelOutput

    before = output()
    reversibilize(model, scale=scale, adapter_dim=adapter_dim, exact=exact)
    after = output()
    change = None if before is None else (after - before).abs().max().item()
    path = save(model, dst, max_shard_size=max_shard_size)
    source, target = training_state_beside(src), training_state_beside(dst)
    if target.resolve() != source.resolve():
        target.unlink(missing_ok=True)  # it belonged to the model replaced
    if source.is_file():
        warnings.warn(f"{source} is not carried to {path}: the converted model has new parameters (its adapters); "
                      "start a new optimizer", CheckpointWarning, stacklevel=2)
    return path, change
