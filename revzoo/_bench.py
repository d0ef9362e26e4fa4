"""The engine benchmark: activation memory against depth, and step time, of the forms.

A stack of pre-norm attention + feed-forward blocks is trained for one step as
- `sequential`: the classic residual stack, storing activations;
- `reversible`: the reversible form, differentiated by inversion;
- `checkpoint`: the sequential form with `torch.utils.checkpoint` around each sub-layer.
The recompute lower bound is the sequential step plus one no-grad forward of the stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._measure import alternate_times, measure_peak, peak_in_subprocess
from ._sequence import ReversibleSequence

__all__ = ["BenchConfig", "main", "run_bench"]

CONFIGS = ("sequential", "reversible", "checkpoint")


@dataclass(frozen=True)
class BenchConfig:
    dim: int = 256
    heads: int = 8
    seq: int = 512
    batch: int = 4


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class Checkpointed(nn.Module):
    """Wraps a sub-layer in torch.utils.checkpoint (non-reentrant), for the comparison."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.inner, x, use_reentrant=False)


def build_stack(config: BenchConfig, depth: int, kind: str) -> ReversibleSequence:
    wrap: Callable[[nn.Module], nn.Module] = Checkpointed if kind == "checkpoint" else (lambda module: module)
    blocks = [(wrap(Attention(config.dim, config.heads)), wrap(FeedForward(config.dim))) for _ in range(depth)]
    return ReversibleSequence(blocks, form="reversible" if kind == "reversible" else "sequential")


def _step(stack: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        stack(x).square().mean().backward()

    return run


def _inputs(config: BenchConfig) -> torch.Tensor:
    return torch.randn(config.batch, config.seq, config.dim, generator=torch.Generator().manual_seed(0))


def measure_memory(config: BenchConfig, depth: int, kind: str) -> int:
    """Returns the peak activation bytes of one training step (run in a fresh process)."""
    torch.manual_seed(0)
    stack = build_stack(config, depth, kind)
    for param in stack.parameters():
        param.grad = torch.zeros_like(param)
    step = _step(stack, _inputs(config))
    step()  # warm-up: lazy allocations are not activations
    return measure_peak(step)


def measure_time(config: BenchConfig, depth: int, rounds: int, progress=None) -> dict[str, float]:
    """Returns step time per configuration relative to the sequential step, plus the recompute lower bound."""
    torch.manual_seed(0)
    x = _inputs(config)
    stacks = {kind: build_stack(config, depth, kind) for kind in CONFIGS}

    def no_grad_forward() -> None:
        with torch.no_grad():
            stacks["sequential"](x)

    runs = {kind: _step(stack, x) for kind, stack in stacks.items()}
    runs["no-grad forward"] = no_grad_forward
    ratios = alternate_times(runs, "sequential", rounds, progress)
    ratios["lower bound"] = 1.0 + ratios.pop("no-grad forward")
    return ratios


def _progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def run_bench(
    depths: tuple[int, ...] = (4, 8, 16, 32),
    time_depth: int = 16,
    rounds: int = 5,
    config: BenchConfig | None = None,
    quick: bool = False,
    out_dir: str | None = None,
) -> dict:
    """Measures memory against depth and time at `time_depth`; prints the tables and returns the figures."""
    config = config or BenchConfig()
    if quick:
        depths, time_depth, rounds = (2, 4, 8), 4, 3
        config = BenchConfig(dim=128, heads=4, seq=256, batch=2)
    memory: dict[str, dict[int, int]] = {kind: {} for kind in CONFIGS}
    for depth in depths:
        for kind in CONFIGS:
            _progress(f"memory: {kind} at depth {depth}")
            args = ["--measure-memory", kind, str(depth), json.dumps(config.__dict__)]
            memory[kind][depth] = peak_in_subprocess("revzoo._bench", args)["bytes"]
    _progress(f"time at depth {time_depth}")
    times = measure_time(config, time_depth, rounds, _progress)
    results = {"config": config.__dict__, "memory": memory, "time_depth": time_depth, "time": times}
    print(format_results(results))
    if out_dir is not None:
        from pathlib import Path

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "engine.json").write_text(json.dumps(results, indent=2))
        (Path(out_dir) / "engine.md").write_text(format_results(results) + "\n")
        print(f"wrote {Path(out_dir) / 'engine.md'} and engine.json")
    return results


def format_results(results: dict) -> str:
    memory, times = results["memory"], results["time"]
    depths = sorted(next(iter(memory.values())))
    config = results["config"]
    lines = [
        f"Peak activation memory of one training step, MiB (dim {config['dim']}, heads {config['heads']}, "
        f"seq {config['seq']}, batch {config['batch']}):",
        "",
        "| depth | " + " | ".join(CONFIGS) + " | reversible / sequential |",
        "|---:|" + "---:|" * (len(CONFIGS) + 1),
    ]
    for depth in depths:
        cells = [f"{memory[kind][depth] / 2**20:.1f}" for kind in CONFIGS]
        ratio = memory["reversible"][depth] / memory["sequential"][depth]
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    growth = memory["reversible"][depths[-1]] / memory["reversible"][depths[0]]
    lines += [
        "",
        f"reversible memory at depth {depths[-1]} / depth {depths[0]}: {growth:.2f}x",
        "",
        f"Training-step time at depth {results['time_depth']}, relative to the sequential form (median of rounds):",
        "",
        "| sequential | reversible | checkpoint | recompute lower bound | reversible / lower bound |",
        "|---:|---:|---:|---:|---:|",
        f"| 1.00 | {times['reversible']:.2f} | {times['checkpoint']:.2f} | {times['lower bound']:.2f} "
        f"| {times['reversible'] / times['lower bound']:.3f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure-memory", nargs=3, metavar=("KIND", "DEPTH", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--time-depth", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a small configuration for a smoke run")
    parser.add_argument("--out", help="directory to write engine.md and engine.json")
    args = parser.parse_args(argv)
    if args.measure_memory:
        kind, depth, config = args.measure_memory
        peak = measure_memory(BenchConfig(**json.loads(config)), int(depth), kind)
        print(json.dumps({"bytes": peak}))
        return
    run_bench(tuple(args.depths), args.time_depth, args.rounds, quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()
