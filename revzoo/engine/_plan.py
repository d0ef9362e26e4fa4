"""What one block's branches need under "invert" beyond their own parameters (found by `_probe`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._buffers import BufferSlot

__all__ = ["BlockPlan", "BranchPlan"]


@dataclass(frozen=True)
class BranchPlan:
    """Tensors one branch needs gradients for besides its parameters, and the buffers it changes."""

    hidden: tuple[torch.Tensor, ...] = ()
    buffers: tuple[BufferSlot, ...] = ()


@dataclass
class BlockPlan:
    """The plans of a block's two branches, `f` then `g`. `stale` is set when a backward found a branch using
    a tensor requiring grad that the plan lacks (a parameter used only on some calls): the next call probes again."""

    branches: tuple[BranchPlan, BranchPlan] = (BranchPlan(), BranchPlan())
    stale: bool = field(default=False, compare=False)

    def hidden(self) -> list[torch.Tensor]:
        """Returns the leaves either branch uses without owning them, each once."""
        return list({id(t): t for branch in self.branches for t in branch.hidden}.values())
