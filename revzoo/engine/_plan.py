"""What one block's branches need under "invert" beyond their own parameters (found by `_probe`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._buffers import BufferSlot

__all__ = ["BlockPlan", "BranchPlan"]


@dataclass(frozen=True)
class BranchPlan:
    """Tensors one branch needs gradients for besides its parameters, and the buffers it changes."""

    hidden: tuple[torch.Tensor, ...] = ()
    buffers: tuple[BufferSlot, ...] = ()


@dataclass(frozen=True)
class BlockPlan:
    """The plans of a block's two branches, `f` then `g`."""

    branches: tuple[BranchPlan, BranchPlan] = (BranchPlan(), BranchPlan())

    def hidden(self) -> list[torch.Tensor]:
        """Returns the leaves either branch uses without owning them, each once."""
        return list({id(t): t for branch in self.branches for t in branch.hidden}.values())
