"""Cases where the invert execution once returned numbers that differ from autograd's without a word.

Each either gives autograd's gradients (compared in float64, tensor by tensor) or ends in a clear error.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import revzoo


class Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_check_reversible_reports_a_nan_reconstruction_as_nan() -> None:
    stack = revzoo.ReversibleSequence([(Scaled(math.inf), nn.Linear(3, 3))])
    report = revzoo.check_reversible(stack, torch.randn(2, 3))
    assert math.isnan(report.max_reconstruction_error) and math.isnan(report.blocks[0].reconstruction_abs)
