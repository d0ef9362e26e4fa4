"""Training state: what resuming needs beside the weights, keyed by parameter name so that it outlives index order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["TrainingState"]


@dataclass(frozen=True)
class TrainingState:
    """An optimizer's state keyed by parameter name, a scheduler's state and the epoch.

    `optimizer` is `optimizer.state_dict()` with every parameter index replaced by that
    parameter's name in the model, so it loads into an optimizer over the same parameters
    built in another order (another library's, say) and is what a foreign format's
    reader returns beside the weights (`ImportedCheckpoint.training`).
    """

    optimizer: Mapping[str, Any]
    scheduler: Any = None
    epoch: int = 0

    def __post_init__(self) -> None:
        _check_state_dict(self.optimizer)
        names = self.parameter_names
        if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
            raise CheckpointError("training state: the optimizer's param_groups must name each parameter once")
        stray = sorted(set(self.optimizer["state"]) - set(names))
        if stray:
            raise CheckpointError(f"training state: state for parameters no param group holds: {stray[:3]}")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise CheckpointError(f"training state: epoch must be a non-negative integer, got {self.epoch!r:.40}")

    @property
    def parameter_names(self) -> list[str]:
        """The names of the optimizer's parameters, group by group."""
        return [name for group in self.optimizer["param_groups"] for name in group["params"]]

    @classmethod
    def from_indexed(cls, names: Sequence[str], optimizer_state: Mapping[str, Any], scheduler: Any = None,
                     epoch: int = 0) -> TrainingState:
        """Names an optimizer state dict's parameters: index i is `names[i]`."""
        _check_state_dict(optimizer_state)

        def name(index: Any) -> str:
            if not isinstance(index, int) or not 0 <= index < len(names):
                raise CheckpointError(f"training state: the optimizer names parameter {index!r:.40}; "
                                      f"expected an index below {len(names)}")
            return names[index]

        state = {name(index): dict(entries) for index, entries in optimizer_state["state"].items()}
        groups = [{**group, "params": [name(index) for index in group["params"]]}
                  for group in optimizer_state["param_groups"]]
        return cls({"state": state, "param_groups": groups}, scheduler, epoch)

    @classmethod
    def of(cls, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
           epoch: int = 0) -> TrainingState:
        """The state of `optimizer` (built over `model`'s parameters) and `scheduler` now."""
        return cls.from_indexed(_optimizer_names(model, optimizer), optimizer.state_dict(),
                                None if scheduler is None else scheduler.state_dict(), epoch)

    def for_model(self, model: nn.Module) -> TrainingState:
        """The same state under the names `model.named_parameters()` gives (a tied parameter has one; names the
        model lacks are kept)."""
        first = {id(param): name for name, param in model.named_parameters()}
        names = {name: first[id(param)] for name, param in model.named_parameters(remove_duplicate=False)}
        state = {names.get(name, name): entries for name, entries in self.optimizer["state"].items()}
        groups = [{**group, "params": [names.get(name, name) for name in group["params"]]}
                  for group in self.optimizer["param_groups"]]
        return TrainingState({"state": state, "param_groups": groups}, self.scheduler, self.epoch)

    def indexed(self, names: Sequence[str]) -> dict[str, Any]:
        """The optimizer state dict of an optimizer over the parameters `names`, in that order (groups as saved)."""
        _check_same(names, self.parameter_names, "")
        index = {name: i for i, name in enumerate(names)}
        return {"state": {index[name]: dict(entries) for name, entries in self.optimizer["state"].items()},
                "param_groups": [{**group, "params": sorted(index[name] for name in group["params"])}
                                 for group in self.optimizer["param_groups"]]}

    def load_into(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> int:
        """Loads the state into `optimizer` (built over `model`'s parameters) and `scheduler`; returns the epoch.

        Each of the optimizer's param groups must hold the parameters of the saved group at
        its place, in any order.
        """
        names = _optimizer_names(model, optimizer)
        saved = self.for_model(model).optimizer
        groups_saved = saved["param_groups"]
        if len(groups_saved) != len(optimizer.param_groups):
            raise CheckpointError(f"the saved optimizer has {len(groups_saved)} param group(s); "
                                  f"this one has {len(optimizer.param_groups)}")
        # load_state_dict pairs the saved ids of each group with that group's parameters in order
        groups, offset = [], 0
        for number, (group, saved_group) in enumerate(zip(optimizer.param_groups, groups_saved)):
            own = names[offset:offset + len(group["params"])]
            _check_same(own, saved_group["params"], f" in param group {number}" if len(groups_saved) > 1 else "")
            groups.append({**saved_group, "params": list(range(offset, offset + len(own)))})
            offset += len(own)
        _check_fits_optimizer(optimizer, groups_saved, saved["state"], dict(zip(names, _parameters(optimizer))))
        index = {name: i for i, name in enumerate(names)}
        optimizer.load_state_dict({"state": {index[name]: dict(entries) for name, entries in saved["state"].items()},
                                   "param_groups": groups})
        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(self.scheduler)
        return self.epoch


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [param for group in optimizer.param_groups for param in group["params"]]


def _check_fits_optimizer(optimizer: torch.optim.Optimizer, groups: Sequence[Mapping], state: Mapping[str, Mapping],
                          params: Mapping[str, torch.Tensor]) -> None:
    """Refuses a saved state this optimizer would fail on at its next step, before anything is loaded: another
    optimizer's (other settings: SGD's into Adam gave KeyError 'step'), non-numeric settings, a negative step, a
    per-parameter tensor of the parameter's size in another shape."""
    kind = type(optimizer).__name__
    for number, (group, saved) in enumerate(zip(optimizer.param_groups, groups)):
        own, theirs = set(group) - {"params"}, set(saved) - {"params"}
        if own - theirs and theirs - own:  # only one side: a setting an older or newer torch adds
            raise CheckpointError(f"the saved optimizer state is not {kind}'s: its param group {number} has "
                                  f"{sorted(theirs - own)}, which {kind} has not, and lacks {sorted(own - theirs)}; "
                                  "was it saved from another optimizer?")
        for key in ("lr", "eps", "weight_decay", "momentum"):
            value = saved.get(key)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          or isinstance(value, torch.Tensor) and value.numel() == 1):
                raise CheckpointError(f"the saved optimizer's {key} is {value!r:.40}, not a number")
    for name, entries in state.items():
        param = params.get(name)
        for key, value in entries.items():
            if key == "step" and (value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value) < 0:
                raise CheckpointError(f"the saved optimizer state of {name} has step {value!r}, which is negative")
            if param is not None and isinstance(value, torch.Tensor) and value.numel() == param.numel() \
                    and value.shape != param.shape and value.numel() > 1:
                raise CheckpointError(f"the saved optimizer state {key!r} of {name} has shape {tuple(value.shape)}, "
                                      f"its parameter {tuple(param.shape)}")


def _check_state_dict(optimizer_state: Any) -> None:
    """Refuses what is not laid out as `optimizer.state_dict()` is (a corrupt or foreign file's)."""
    layout = optimizer_state if isinstance(optimizer_state, Mapping) else {}
    state, groups = layout.get("state"), layout.get("param_groups")
    if not isinstance(state, Mapping) or not all(isinstance(entries, Mapping) for entries in state.values()) or \
            not isinstance(groups, (list, tuple)) or not all(
                isinstance(group, Mapping) and isinstance(group.get("params"), (list, tuple)) for group in groups):
        raise CheckpointError("training state: the optimizer's state must be laid out as optimizer.state_dict() "
                              "is: 'state' (a mapping per parameter) and 'param_groups' (each with its 'params')")


def _check_same(names: Sequence[str], saved: Sequence[str], where: str) -> None:
    if sorted(names) != sorted(saved):
        missing, extra = sorted(set(names) - set(saved)), sorted(set(saved) - set(names))
        raise CheckpointError(f"the saved optimizer is over other parameters{where} (missing {missing[:3]}, "
                              f"extra {extra[:3]})")


def _optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The model's name of each of the optimizer's parameters, in the optimizer's order."""
    by_identity = {id(parameter): name for name, parameter in model.named_parameters()}
    params = [param for group in optimizer.param_groups for param in group["params"]]
    unknown = [param for param in params if id(param) not in by_identity]
    if unknown:
        raise CheckpointError(f"the optimizer holds {len(unknown)} parameter(s) that are not the model's; "
                              "build it over model.parameters()")
    return [by_identity[id(param)] for param in params]
