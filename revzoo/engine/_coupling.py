"""The coupling's arithmetic: how a branch output joins a stream, and how inversion takes it back out.

`Coupling` fixes the function: `y1 = λ·x1 + f(x2)`, `y2 = β·x2 + g(y1)`, the streams optionally
swapped after each block, the output the mean of the streams or the stream `f` wrote last.
Two arithmetics compute it:

- `FloatArithmetic`: the streams are tensors of the model's dtype. Inversion (`x1 = (y1 - f(x2)) / λ`)
  rounds, so reconstructed inputs drift from the forward's, more so as λ, β shrink.
- `ExactArithmetic`: the streams are float64 tensors on a fixed-point grid (multiples of `2**-FRACTION_BITS`
  below `2**RANGE_BITS` in magnitude, so every sum of two of them is exact in float64). Each branch output is
  rounded to the grid before it is added (straight-through in backward), and a scale `2**-s` floors the
  scaled stream to the grid, keeping the `s` bits it drops in a packed side buffer. Inversion then
  subtracts exactly what the forward added and restores the dropped bits: reconstructed inputs are bitwise
  the forward's, at any depth and scale (MacKay et al., "Reversible Recurrent Neural Networks", 2018).

Both executions of a stack call the same functions, so `"autograd"` differentiates exactly what `"invert"`
inverts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["FRACTION_BITS", "RANGE_BITS", "Coupling", "ExactArithmetic", "FloatArithmetic", "arithmetic_for"]

Output = Literal["mean", "f"]
OUTPUTS: tuple[str, ...] = ("mean", "f")
Start = Literal["copy", "zero"]
STARTS: tuple[str, ...] = ("copy", "zero")
FRACTION_BITS = 32  # grid step 2**-32 (2.3e-10): below float32's and bfloat16's rounding of any value above 2**-9
RANGE_BITS = 21  # |stream| < 2**21 = 2,097,152: 32 + 21 = 53 bits, float64's significand, so sums stay exact
MAX_SHIFT = 8  # exact scales are 2**-s for s in 0..8 (1 down to 1/256): s side bits per element per block


@dataclass(frozen=True)
class Coupling:
    """How a stack's blocks combine their two streams (defaults: the plain reversible coupling).

    Args:
        scales: (λ, β), multiplying x1 and x2 in `y1 = λ·x1 + f(x2)`, `y2 = β·x2 + g(y1)`; finite, non-zero.
        swap: exchange the two streams after every block (MEFT's coupling: f of the next block reads y1).
        output: "mean" of the two streams, or "f": the stream the last `f` wrote (MEFT's output).
        start: the streams start as `(x, x)` ("copy") or `(0, x)` ("zero"): with "zero" the first block
            computes `f(x)` exactly, so a converted pretrained stack deviates by O(λβ), not O(λ).
    """

    scales: tuple[float, float] = (1.0, 1.0)
    swap: bool = False
    output: Output = "mean"
    start: Start = "copy"

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if len(scales) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales):
            raise ValueError(f"coupling scales must be two numbers (λ, β), got {self.scales!r}")
        for name, scale in zip(("λ", "β"), scales):
            if not math.isfinite(scale) or scale == 0:
                raise ValueError(f"coupling scale {name} = {scale!r} cannot be inverted; use a finite non-zero number")
        if not isinstance(self.swap, bool):
            raise ValueError(f"coupling swap must be True or False, got {self.swap!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"coupling output {self.output!r} is not one of {', '.join(map(repr, OUTPUTS))}")
        if self.start not in STARTS:
            raise ValueError(f"coupling start {self.start!r} is not one of {', '.join(map(repr, STARTS))}")
        object.__setattr__(self, "scales", (float(scales[0]), float(scales[1])))

    def shifts(self) -> tuple[int, int]:
        """Returns `(s1, s2)` with `scales == (2**-s1, 2**-s2)`, or raises: the scales exact arithmetic supports."""
        shifts = []
        for name, scale in zip(("λ", "β"), self.scales):
            mantissa, exponent = math.frexp(scale)
            shift = 1 - exponent
            if mantissa != 0.5 or not 0 <= shift <= MAX_SHIFT:
                nearest = 2.0 ** -min(max(round(-math.log2(abs(scale))), 0), MAX_SHIFT)
                raise ValueError(
                    f"exact=True supports coupling scales 2**-s for s in 0..{MAX_SHIFT} (1, 1/2, ..., 1/256); "
                    f"{name} = {scale!r} is not one (nearest: {nearest!r})"
                )
            shifts.append(shift)
        return shifts[0], shifts[1]


class FloatArithmetic:
    """Streams in the model's dtype; inversion divides, so it is as exact as floating point allows."""

    exact = False

    def __init__(self, coupling: Coupling) -> None:
        self.scales = coupling.scales

    def enter(self, stream: torch.Tensor) -> torch.Tensor:
        return stream

    def branch_input(self, stream: torch.Tensor) -> torch.Tensor:
        return stream

    def combine(self, index: int, branch: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Returns `scale·x + out` (today's `x + out` exactly when the scale is 1)."""
        scale = self.scales[branch]
        return x + out if scale == 1 else x * scale + out

    def side_bits(self, branch: int, x: torch.Tensor) -> None:
        """Float inversion keeps nothing beside the streams."""

    def separate(self, branch: int, y: torch.Tensor, out: torch.Tensor, side: None) -> torch.Tensor:
        scale = self.scales[branch]
        return y - out if scale == 1 else (y - out) / scale

    def grad_through_scale(self, branch: int, grad: torch.Tensor | None) -> torch.Tensor | None:
        scale = self.scales[branch]
        return grad if scale == 1 or grad is None else grad * scale

    def leave(self, stream: torch.Tensor) -> torch.Tensor:
        return stream

    def check_range(self) -> None:
        """Exact arithmetic's range errors surface here; floats have none."""


def _grid(t: torch.Tensor) -> torch.Tensor:
    """`t` rounded to the nearest grid value (ties to even), as float64."""
    return torch.round(t.double() * 2.0**FRACTION_BITS) * 2.0**-FRACTION_BITS


def _in_range(t: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor (no host sync): is every value of `t` finite and inside the grid's exact range?"""
    return (t.abs() < 2.0**RANGE_BITS).all()


class _ToGrid(torch.autograd.Function):
    """`x` rounded onto the grid, as float64; straight-through in backward (gradient cast back to x's dtype)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.dtype = x.dtype
        return _grid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.to(ctx.dtype)


def _grid_add(x: torch.Tensor, out: torch.Tensor, shift: int) -> torch.Tensor:
    """`floor_grid(x · 2**-shift) + round_grid(out)`, exact in float64 whenever the result is in range.

    Every operand is a multiple of the grid step (a rounded `out` too, even beyond the range, where
    float64 holds only integers), so the sum is exact when it fits in 53 bits: checking the result's
    range is enough.
    """
    scaled = x if shift == 0 else torch.floor(x * 2.0 ** (FRACTION_BITS - shift)) * 2.0**-FRACTION_BITS
    return scaled + _grid(out)


class _GridAdd(torch.autograd.Function):
    """`_grid_add` with straight-through gradients for the roundings."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, shift: int) -> torch.Tensor:
        ctx.shift, ctx.out_dtype = shift, out.dtype
        return _grid_add(x, out, shift)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return (grad if ctx.shift == 0 else grad * 2.0**-ctx.shift), grad.to(ctx.out_dtype), None


def pack_low_bits(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Returns the `shift` low bits of every grid value of `x` (its multiples of 2**-FRACTION_BITS), packed.

    Eight elements' bits fill one int64 (8 * shift <= 64 bits), of which the `shift` low bytes are kept:
    exactly `shift` bits per element, with a handful of whole-tensor operations.
    """
    low = (x * 2.0**FRACTION_BITS).to(torch.int64) & ((1 << shift) - 1)
    low = torch.nn.functional.pad(low.reshape(-1), (0, -low.numel() % 8)).reshape(-1, 8)
    words = (low << (shift * torch.arange(8, device=x.device))).sum(dim=1)
    return words.view(torch.uint8).reshape(-1, 8)[:, :shift].contiguous()


def unpack_low_bits(packed: torch.Tensor, shift: int, like: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_low_bits`: the low bits as float64 grid units, shaped like `like`."""
    words = torch.nn.functional.pad(packed, (0, 8 - shift)).view(torch.int64).reshape(-1, 1)
    low = (words >> (shift * torch.arange(8, device=packed.device))) & ((1 << shift) - 1)
    return low.reshape(-1)[: like.numel()].reshape(like.shape).to(torch.float64)


class ExactArithmetic:
    """Streams as float64 on a fixed-point grid; inversion is bitwise exact. See the module docstring."""

    exact = True

    def __init__(self, coupling: Coupling) -> None:
        self.shifts = coupling.shifts()
        self.dtype: torch.dtype | None = None
        self.in_range: list[tuple[int, int, torch.Tensor]] = []  # checked once per call: no sync per block

    def enter(self, stream: torch.Tensor) -> torch.Tensor:
        if not stream.is_floating_point():
            raise TypeError(f"exact=True needs a floating-point stream, got {stream.dtype}")
        self.dtype = stream.dtype
        entered = _ToGrid.apply(stream)
        self.in_range.append((-1, -1, _in_range(entered)))
        return entered

    def branch_input(self, stream: torch.Tensor) -> torch.Tensor:
        """The stream in the branch's dtype; always one autograd node (a view when the dtype is the stream's), so
        the gradient of the branch's uses reaches the stream as one sum under both executions (bitwise in float64)."""
        return stream.to(self.dtype) if stream.dtype != self.dtype else stream.view_as(stream)

    def combine(self, index: int, branch: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Returns the exact `floor_grid(scale·x) + round_grid(out)`; its range is checked by `check_range`."""
        shift = self.shifts[branch]
        y = _GridAdd.apply(x, out, shift) if torch.is_grad_enabled() else _grid_add(x, out, shift)
        self.in_range.append((index, branch, _in_range(y)))
        return y

    def side_bits(self, branch: int, x: torch.Tensor) -> torch.Tensor | None:
        """Returns the bits of `x` that scaling by `2**-shift` drops, packed (None at scale 1): what inversion needs."""
        shift = self.shifts[branch]
        return pack_low_bits(x, shift) if shift else None

    def separate(self, branch: int, y: torch.Tensor, out: torch.Tensor, side: torch.Tensor | None) -> torch.Tensor:
        shift = self.shifts[branch]
        units = y * 2.0**FRACTION_BITS - torch.round(out.double() * 2.0**FRACTION_BITS)
        if shift:
            units = units * 2.0**shift + unpack_low_bits(side, shift, y)
        return units * 2.0**-FRACTION_BITS

    def grad_through_scale(self, branch: int, grad: torch.Tensor | None) -> torch.Tensor | None:
        shift = self.shifts[branch]
        return grad if shift == 0 or grad is None else grad * 2.0**-shift

    def leave(self, stream: torch.Tensor) -> torch.Tensor:
        return stream.to(self.dtype)

    def check_range(self) -> None:
        """Raises OverflowError naming the first block and branch whose stream left the grid's range."""
        flags, self.in_range = self.in_range, []
        if not flags or bool(torch.stack([flag for *_, flag in flags]).all()):
            return
        index, branch, _ = next(entry for entry in flags if not bool(entry[2]))
        where = "the stack's input" if index < 0 else f"block {index}'s {'fg'[branch]} branch"
        raise OverflowError(
            f"exact=True: {where} took the stream outside the fixed-point range |x| < 2**{RANGE_BITS} "
            "(or made it NaN/inf); scale the input down, or run this stack with exact=False"
        )


def arithmetic_for(coupling: Coupling, exact: bool) -> FloatArithmetic | ExactArithmetic:
    """Returns a fresh arithmetic for one call of a stack."""
    return ExactArithmetic(coupling) if exact else FloatArithmetic(coupling)
