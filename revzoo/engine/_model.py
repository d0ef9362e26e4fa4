"""ZooModel: the base of every model a plugin builds, so that the whole model answers to `form`, `execution`
and `exact`."""

from __future__ import annotations

from torch import nn

from ._sequence import _stacks, get_execution, get_form, set_execution, set_form

__all__ = ["ZooModel"]


class ZooModel(nn.Module):
    """An `nn.Module` whose `form`, `execution` and `exact` read and set every ReversibleSequence inside it.

    The form and execution live on the stacks; without these properties, `model.form = "sequential"`
    would set a plain attribute and leave the model computing the reversible function. An unknown
    value raises ValueError before any stack changes.

    Example:
        >>> class Net(ZooModel):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.stack = ReversibleSequence([(nn.Linear(4, 4), nn.Linear(4, 4))])
        >>> net = Net()
        >>> net.form = "sequential"
        >>> net.stack.form
        'sequential'
    """

    @property
    def form(self) -> str:
        """The form shared by every stack ("reversible" or "sequential")."""
        return get_form(self)

    @form.setter
    def form(self, value: str) -> None:
        set_form(self, value)

    @property
    def execution(self) -> str:
        """The execution shared by every stack ("invert" or "autograd")."""
        return get_execution(self)

    @execution.setter
    def execution(self, value: str) -> None:
        set_execution(self, value)

    @property
    def exact(self) -> bool:
        """Whether every stack runs its reversible form in exact fixed-point arithmetic."""
        return all(stack.exact for stack in _stacks(self))

    @exact.setter
    def exact(self, value: bool) -> None:
        stacks = _stacks(self)
        if value:
            for stack in stacks:  # refuse before changing any stack
                stack.coupling.shifts()
        for stack in stacks:
            stack.exact = value
