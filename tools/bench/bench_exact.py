"""Exact inversion, measured: gradient agreement, reconstruction, side bits, memory and step time.

Engine alone: pairs of LayerNorm-Linear-GELU-Linear branches, dim 64, batch 8x32, loss mean(y**2).

    python tools/bench/bench_exact.py                 # everything (a few minutes on 2 cores)
    python tools/bench/bench_exact.py --skip-time     # without the step-time rounds

1. Largest relative difference, over the input and every parameter gradient, between "invert" and
   "autograd" of the same stack, plain float vs exact=True, at depths 2/16/96, in float32, bf16 autocast
   and bf16 parameters; and whether every reconstructed input was bitwise the forward's.
2. Reconstruction error of the first block's input at scaled couplings (λ = β, swap), float vs exact.
3. Side bits per element per block against λ, and peak activation memory against depth (one process
   per configuration, MALLOC_MMAP_THRESHOLD_ set, as `revzoo bench` measures): plain invert, exact at
   λ = 1 and 1/8, and torch.utils.checkpoint per block.
4. Step time of exact against plain invert and against autograd, depths 16 and 64 (alternated rounds),
   at a larger width (--time-dim, --time-tokens), where the step is compute, not Python overhead.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import revzoo
from revzoo.bench import alternate_times, measure_peak, peak_in_subprocess

DIM, BATCH, TOKENS = 64, 8, 32


def branch(dim: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


def stack(depth: int, exact: bool = False, scale: float = 1.0, dim: int = DIM) -> revzoo.ReversibleSequence:
    torch.manual_seed(0)
    coupling = revzoo.Coupling((scale, scale), swap=scale != 1.0)
    return revzoo.ReversibleSequence([(branch(dim), branch(dim)) for _ in range(depth)], coupling=coupling, exact=exact)


def gradients(model: nn.Module, x: torch.Tensor, autocast: bool) -> list[torch.Tensor]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = model(x)
    return list(torch.autograd.grad(y.float().pow(2).mean(), [x, *model.parameters()]))


def grad_difference(depth: int, precision: str, exact: bool) -> tuple[float, bool]:
    model = stack(depth, exact)
    dtype = torch.bfloat16 if precision == "bf16 parameters" else torch.float32
    model = model.to(dtype)
    x = torch.randn(BATCH, TOKENS, DIM, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_()
    autocast = precision == "bf16 autocast"
    model.execution = "autograd"
    reference = gradients(model, x, autocast)
    model.execution = "invert"
    with model.recording_inversions() as traces:
        candidate = gradients(model, x, autocast)
    trace = traces[0]
    pairs = [(a, b) for index, rebuilt in trace.reconstructed.items() for a, b in zip(trace.inputs[index], rebuilt)]
    bitwise = all(torch.equal(a, b) for a, b in pairs)
    worst = max(((c.float() - r.float()).abs().max() / r.float().abs().max()).item() for r, c in zip(reference, candidate))
    return worst, bitwise


def first_block_reconstruction(depth: int, scale: float, exact: bool) -> float:
    model = stack(depth, exact, scale)
    x = torch.randn(BATCH, TOKENS, DIM, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with model.recording_inversions() as traces:
        model(x).pow(2).mean().backward()
    original, rebuilt = traces[0].inputs[0][1], traces[0].reconstructed[0][1]
    return ((original - rebuilt).abs().max() / original.abs().max()).item()


def kind_model(kind: str, depth: int) -> nn.Module:
    if kind == "checkpoint":
        blocks = [(block.f, block.g) for block in stack(depth).blocks]

        class Checkpointed(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.pairs = nn.ModuleList(nn.ModuleList(pair) for pair in blocks)

            def forward(self, x: torch.Tensor) -> torch.Tensor:  # the same reversible function, inputs stored per block
                y1 = y2 = x
                for f, g in self.pairs:
                    y1, y2 = checkpoint(lambda a, b, f=f, g=g: _block(a, b, f, g), y1, y2, use_reentrant=False)
                return (y1 + y2) / 2

        return Checkpointed()
    exact, scale = {"invert": (False, 1.0), "exact": (True, 1.0), "exact-1/8": (True, 0.125)}[kind]
    return stack(depth, exact, scale)


def _block(y1: torch.Tensor, y2: torch.Tensor, f: nn.Module, g: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    y1 = y1 + f(y2)
    return y1, y2 + g(y1)


def measure_child(kind: str, depth: int) -> None:
    torch.set_num_threads(1)
    model = kind_model(kind, depth)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    x = torch.randn(BATCH, TOKENS, DIM, requires_grad=True)

    def step() -> None:
        model(x).pow(2).mean().backward()

    step()
    print(json.dumps({"bytes": measure_peak(step)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--time-dim", type=int, default=256, help="width for the step times (default 256)")
    parser.add_argument("--time-tokens", type=int, default=512, help="tokens per step for the step times (4 rows)")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure_child(args.measure[0], int(args.measure[1]))
        return
    torch.set_num_threads(1)

    print("1. max relative gradient difference, invert vs autograd of the same function (bitwise reconstruction)")
    precisions = ("float32", "bf16 autocast", "bf16 parameters")
    print(f"{'depth':>5} | " + " | ".join(f"{p + ' float':>20} | {p + ' exact':>24}" for p in precisions))
    for depth in (2, 16, 96):
        cells = []
        for precision in precisions:
            for exact in (False, True):
                worst, bitwise = grad_difference(depth, precision, exact)
                cells.append(f"{worst:>9.1e} ({'bitwise' if bitwise else 'drifts'})".rjust(20 if not exact else 24))
        print(f"{depth:>5} | " + " | ".join(cells), flush=True)

    print("\n2. relative reconstruction error of the first block's input, λ = β, streams swapped, float32")
    print(f"{'depth':>5} {'λ':>7} {'float':>10} {'exact':>10}")
    for depth in (6, 12, 24, 48):
        for scale in (0.5, 0.25, 0.125, 2.0**-7):
            print(f"{depth:>5} {scale:>7.4g} {first_block_reconstruction(depth, scale, False):>10.2e} "
                  f"{first_block_reconstruction(depth, scale, True):>10.2e}", flush=True)

    print("\n3a. side information kept for backward by exact scaled couplings (both streams scaled)")
    for scale in (1.0, 0.5, 0.125, 2.0**-8):
        bits = 2 * (0 if scale == 1 else round(-torch.log2(torch.tensor(scale)).item()))
        print(f"  λ = β = {scale:<10g} {bits:>2} bits per element per block  ({bits / 32:.3f} of a float32 activation)")
    print("\n3b. peak activation memory of one step (MiB), one process per cell")
    kinds = ("invert", "exact", "exact-1/8", "checkpoint")
    print(f"{'depth':>5} " + " ".join(f"{k:>11}" for k in kinds))
    for depth in (4, 16, 64):
        row = [peak_in_subprocess("tools.bench_exact", ["--measure", kind, str(depth)])["bytes"] / 2**20 for kind in kinds]
        print(f"{depth:>5} " + " ".join(f"{v:>11.1f}" for v in row), flush=True)

    if args.skip_time:
        return
    print(f"\n4. step time relative to plain invert (median of alternated rounds), dim {args.time_dim}, "
          f"4 x {args.time_tokens // 4} tokens")
    for depth in (16, 64):
        x = torch.randn(4, args.time_tokens // 4, args.time_dim, requires_grad=True)
        runs = {}
        for name, (exact, execution) in {"invert": (False, "invert"), "exact": (True, "invert"),
                                         "autograd": (False, "autograd"), "exact autograd": (True, "autograd")}.items():
            model = stack(depth, exact, dim=args.time_dim)
            model.execution = execution
            runs[name] = lambda model=model, x=x: model(x).pow(2).mean().backward()
        ratios = alternate_times(runs, "invert", args.rounds)
        print(f"  depth {depth}: " + ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
