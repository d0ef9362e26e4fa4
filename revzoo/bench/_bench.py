"""`revzoo bench`: activation memory against depth, and step time, of every form, side by side.

Part 1, a transformer stack (pre-norm attention + feed-forward blocks) as sequential,
reversible, per-sub-layer `torch.utils.checkpoint`, and revlib / memcnn where installed.
Part 2, each registered architecture with a small config and example inputs, in its two
forms and with checkpointed blocks. Memory is measured per configuration in its own
process; times alternate configurations in one process and are reported relative to the
sequential form. The recompute lower bound is the sequential step plus one no-grad forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..registry import get_architecture, list_models, loaded_registry
from ._measure import alternate_times, measure_peak, peak_in_subprocess
from ._models import ARCH_KINDS, StackConfig, arch_step, available_stack_kinds, stack_step

__all__ = ["main", "run_bench"]

MIB = 2**20


def _peak_of(model: torch.nn.Module, step) -> int:
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    step()  # warm-up: lazy allocations are not activations
    return measure_peak(step)


def _benchable_architectures() -> list[str]:
    names = []
    for name in list_models(exclude="*-rev"):
        spec = get_architecture(name)
        if spec.example_inputs is not None and "depth" in spec.defaults and len(spec.forms) == 2:
            names.append(name)
    return names


class _Progress:
    """A tqdm bar on stderr over the measurements (a plain line per step without tqdm)."""

    def __init__(self, total: int) -> None:
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, desc="revzoo bench")
        except ImportError:
            self.bar = None

    def step(self, label: str) -> None:
        if self.bar is None:
            print(f"  ... {label}", file=sys.stderr, flush=True)
        else:
            self.bar.set_postfix_str(label)
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_bench(
    depths: tuple[int, ...] = (4, 8, 16, 32, 64),
    time_depth: int = 16,
    arch_depths: tuple[int, ...] = (4, 16, 64),
    arch_time_depth: int = 16,
    rounds: int = 5,
    config: StackConfig | None = None,
    quick: bool = False,
    out_dir: str | None = "bench-results",
    architectures: bool = True,
) -> dict[str, Any]:
    """Measures everything, prints the tables, writes `bench.md`, `bench.json` and `memory.png` to `out_dir`."""
    config = config or StackConfig()
    if quick:
        depths, time_depth, arch_depths, arch_time_depth, rounds = (2, 4, 8), 4, (2, 4), 4, 3
        config = StackConfig(dim=128, heads=4, seq=256, batch=2)
    kinds = available_stack_kinds()
    arch_names = _benchable_architectures() if architectures else []
    progress = _Progress(len(depths) * len(kinds) + 1 + len(arch_names) * (len(arch_depths) * len(ARCH_KINDS) + 1))
    results: dict[str, Any] = {"stack": {"config": asdict(config), "memory": {k: {} for k in kinds}}, "architectures": {}}
    for depth in depths:
        for kind in kinds:
            progress.step(f"stack {kind} depth {depth}")
            args = ["--measure-stack", kind, str(depth), json.dumps(asdict(config))]
            results["stack"]["memory"][kind][depth] = peak_in_subprocess("revzoo.bench._bench", args)["bytes"]
    progress.step(f"stack time at depth {time_depth}")
    results["stack"]["time_depth"] = time_depth
    results["stack"]["time"] = _stack_times(config, time_depth, kinds, rounds)
    for name in arch_names:
        memory = {kind: {} for kind in ARCH_KINDS}
        for depth in arch_depths:
            for kind in ARCH_KINDS:
                progress.step(f"{name} {kind} depth {depth}")
                args = ["--measure-arch", name, kind, str(depth)]
                memory[kind][depth] = peak_in_subprocess("revzoo.bench._bench", args)["bytes"]
        progress.step(f"{name} time")
        runs = {kind: arch_step(name, arch_time_depth, kind)[1] for kind in ARCH_KINDS}
        times = alternate_times(runs, "sequential", rounds)
        results["architectures"][name] = {"memory": memory, "time": times, "time_depth": arch_time_depth,
                                          "small": dict(get_architecture(name).small)}
    progress.close()
    report = format_results(results)
    print(report)
    if out_dir is not None:
        _write(results, report, Path(out_dir))
    return results


def _stack_times(config: StackConfig, depth: int, kinds: tuple[str, ...], rounds: int) -> dict[str, float]:
    built = {kind: stack_step(config, depth, kind) for kind in kinds}
    sequential = built["sequential"][0]
    x = torch.randn(config.batch, config.seq, config.dim)

    def no_grad_forward() -> None:
        with torch.no_grad():
            sequential(x)

    runs = {kind: step for kind, (_, step) in built.items()}
    runs["no-grad forward"] = no_grad_forward
    times = alternate_times(runs, "sequential", rounds)
    times["lower bound"] = 1.0 + times.pop("no-grad forward")
    return times


def _memory_table(memory: dict[str, dict[int, int]], reference: str = "sequential") -> list[str]:
    kinds = list(memory)
    depths = sorted(memory[reference])
    lines = ["| depth | " + " | ".join(kinds) + " | reversible / sequential |", "|---:|" + "---:|" * (len(kinds) + 1)]
    for depth in depths:
        cells = [f"{memory[kind][depth] / MIB:.1f}" for kind in kinds]
        ratio = memory["reversible"][depth] / memory[reference][depth]
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    growth = memory["reversible"][depths[-1]] / max(memory["reversible"][depths[0]], 1)
    return [*lines, "", f"reversible memory at depth {depths[-1]} / depth {depths[0]}: {growth:.2f}x"]


def format_results(results: dict[str, Any]) -> str:
    stack = results["stack"]
    config, times = stack["config"], stack["time"]
    kinds = [k for k in times if k != "lower bound"]
    lines = [
        f"### Transformer stack (dim {config['dim']}, heads {config['heads']}, seq {config['seq']}, "
        f"batch {config['batch']})",
        "",
        "Peak activation memory of one training step, MiB:",
        "",
        *_memory_table(stack["memory"]),
        "",
        f"Training-step time at depth {stack['time_depth']}, relative to the sequential form (median of rounds):",
        "",
        "| " + " | ".join(kinds) + " | recompute lower bound | reversible / lower bound |",
        "|" + "---:|" * (len(kinds) + 2),
        "| " + " | ".join(f"{times[k]:.2f}" for k in kinds)
        + f" | {times['lower bound']:.2f} | {times['reversible'] / times['lower bound']:.3f} |",
    ]
    for name, arch in results["architectures"].items():
        arch_times = arch["time"]
        lines += [
            "",
            f"### {name} (small: {json.dumps(arch['small'])})",
            "",
            "Peak activation memory of one training step on its example input, MiB:",
            "",
            *_memory_table(arch["memory"]),
            "",
            f"Step time at depth {arch['time_depth']} relative to sequential: reversible "
            f"{arch_times['reversible']:.2f}, checkpoint {arch_times['checkpoint']:.2f}",
        ]
    return "\n".join(lines)


def _write(results: dict[str, Any], report: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = "revzoo bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:])
    provenance = {"command": command.strip(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                  "revzoo": __version__}
    (out / "bench.json").write_text(json.dumps({**results, "provenance": provenance}, indent=2))
    (out / "bench.md").write_text(f"Measured with `{command.strip()}`.\n\n{report}\n")
    written = [out / "bench.md", out / "bench.json"]
    try:
        written.append(_plot(results, out / "memory.png"))
    except ImportError:
        print("matplotlib is not installed (pip install 'revzoo[plot]'): no plot", file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)))


def _plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("transformer stack", results["stack"]["memory"])]
    panels += [(name, arch["memory"]) for name, arch in results["architectures"].items()]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (title, memory) in zip(axes.flat, panels):
        for kind, by_depth in memory.items():
            depths = sorted(int(d) for d in by_depth)
            axis.plot(depths, [by_depth[d] / MIB for d in depths], marker="o", label=kind)
        axis.set_xticks(depths, [str(d) for d in depths])
        axis.set_title(title)
        axis.set_xlabel("depth (blocks)")
        axis.set_ylabel("peak activation memory (MiB)")
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="revzoo bench", description=__doc__.splitlines()[0])
    parser.add_argument("--measure-stack", nargs=3, metavar=("KIND", "DEPTH", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--measure-arch", nargs=3, metavar=("NAME", "KIND", "DEPTH"), help=argparse.SUPPRESS)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--time-depth", type=int, default=16)
    parser.add_argument("--arch-depths", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--arch-time-depth", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-architectures", action="store_true", help="only the transformer stack")
    parser.add_argument("--quick", action="store_true", help="a small configuration for a smoke run")
    parser.add_argument("--out", default="bench-results", help="directory for bench.md, bench.json, memory.png")
    args = parser.parse_args(argv)
    if args.measure_stack:
        kind, depth, config = args.measure_stack
        print(json.dumps({"bytes": _peak_of(*stack_step(StackConfig(**json.loads(config)), int(depth), kind))}))
        return
    if args.measure_arch:
        loaded_registry()  # load the plugins before measuring
        name, kind, depth = args.measure_arch
        print(json.dumps({"bytes": _peak_of(*arch_step(name, int(depth), kind))}))
        return
    run_bench(tuple(args.depths), args.time_depth, tuple(args.arch_depths), args.arch_time_depth, args.rounds,
              quick=args.quick, out_dir=args.out, architectures=not args.no_architectures)


if __name__ == "__main__":
    main()
