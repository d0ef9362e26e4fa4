"""What `revzoo bench` shows and writes: the tables (Markdown), bench.md, bench.json and memory.png.

The tables are made from whatever has been measured so far, so that a run stopped by an
error or a signal still reports, and writes, everything it measured before it stopped.
A memory figure of 0 bytes (a step so small that it fits in memory the process already
holds: resident memory resolves whole pages) is shown, but no ratio is made from it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..checkpoints._write import atomic_write_all

__all__ = ["format_results", "write_results"]

MIB = 2**20
NOT_AVAILABLE = "n/a"


def _ratio(numerator: int | None, denominator: int | None) -> str | None:
    """Returns numerator / denominator to two decimals, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return f"{numerator / denominator:.2f}"


def _memory_table(memory: dict[Any, dict[Any, int]], reference: str = "sequential") -> list[str]:
    """Returns the Markdown rows of memory (MiB) by depth and kind, the reversible / reference ratio, and the
    reversible form's growth from the first depth to the last; a missing figure is shown as `-`."""
    kinds = list(memory)
    depths = sorted({int(depth) for by_depth in memory.values() for depth in by_depth})
    figures = {kind: {int(depth): value for depth, value in by_depth.items()} for kind, by_depth in memory.items()}
    lines = ["| depth | " + " | ".join(kinds) + f" | reversible / {reference} |", "|---:|" + "---:|" * (len(kinds) + 1)]
    zero = []
    for depth in depths:
        cells = [f"{figures[kind][depth] / MIB:.1f}" if depth in figures[kind] else "-" for kind in kinds]
        reference_bytes = figures.get(reference, {}).get(depth)
        ratio = _ratio(figures.get("reversible", {}).get(depth), reference_bytes)
        if ratio is None and reference_bytes == 0:
            zero.append(f"{reference} at depth {depth}")
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {ratio or NOT_AVAILABLE} |")
    reversible = figures.get("reversible", {})
    measured = sorted(reversible)
    if len(measured) >= 2:
        first, last = measured[0], measured[-1]
        growth = _ratio(reversible[last], reversible[first])
        if growth is None:
            zero.append(f"reversible at depth {first}")
        lines += ["", f"reversible memory at depth {last} / depth {first}: "
                      + (f"{growth}x" if growth else NOT_AVAILABLE)]
    if zero:
        lines += ["", f"{NOT_AVAILABLE}: {', '.join(zero)} measured 0 bytes (the step fit in memory the process "
                      "already held; resident memory resolves whole pages), so no ratio is made from it: measure a "
                      "larger configuration for one."]
    return lines


def _memory_method(setting: dict[str, Any]) -> str:
    if torch.device(setting["device"]).type == "cuda":
        return "`torch.cuda.max_memory_allocated` above the memory allocated before the step"
    return "resident peak above the resident size before the step, each configuration in its own process"


def _stack_lines(stack: dict[str, Any]) -> list[str]:
    config = stack["config"]
    checked = stack.get("gradient_check", {})
    lines = [
        f"### Transformer stack (dim {config['dim']}, heads {config['heads']}, seq {config['seq']}, "
        f"batch {config['batch']})",
        "",
        "Every configuration runs the same blocks at full width (equal work); revlib and memcnn get the features "
        "doubled, `[x, x]`, and their output halves are averaged, which is exactly revzoo's reversible function.",
    ]
    if checked:
        lines += [
            f"Before timing, each configuration's gradients (input and every parameter, float64, depth "
            f"{stack['time_depth']}) were compared with plain autograd of the function it computes; largest "
            "relative difference: " + ", ".join(f"{kind} {difference:.1e}" for kind, difference in checked.items())
            + ".",
        ]
    if any(stack["memory"].values()):
        lines += ["", "Peak activation memory of one training step, MiB:", "", *_memory_table(stack["memory"])]
    times = stack.get("time")
    if times:
        kinds = [k for k in times if k != "lower bound"]
        lines += [
            "",
            f"Training-step time at depth {stack['time_depth']}, relative to the sequential form (median of rounds):",
            "",
            "| " + " | ".join(kinds) + " | recompute lower bound | reversible / lower bound |",
            "|" + "---:|" * (len(kinds) + 2),
            "| " + " | ".join(f"{times[k]:.2f}" for k in kinds)
            + f" | {times['lower bound']:.2f} | {times['reversible'] / times['lower bound']:.3f} |",
        ]
    return lines


def format_results(results: dict[str, Any]) -> str:
    """Returns the Markdown report of `results`, as far as they go (a stopped run's `incomplete` note first)."""
    setting = results.get("setting", {"device": "cpu", "description": "cpu, float32"})
    lines = [f"On {setting['description']}; memory: {_memory_method(setting)}."]
    if results.get("incomplete"):
        lines += ["", f"**Incomplete**: {results['incomplete']}. The tables hold what was measured before."]
    if "stack" in results:
        lines += ["", *_stack_lines(results["stack"])]
    for name, arch in results.get("architectures", {}).items():
        lines += ["", f"### {name} (small: {json.dumps(arch['small'])})"]
        if any(arch["memory"].values()):
            lines += ["", "Peak activation memory of one training step on its example input, MiB:", "",
                      *_memory_table(arch["memory"])]
        if arch.get("time"):
            lines += ["", f"Step time at depth {arch['time_depth']} relative to sequential: reversible "
                          f"{arch['time']['reversible']:.2f}, checkpoint {arch['time']['checkpoint']:.2f}"]
    return "\n".join(lines)


def _command() -> str:
    argv = sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]
    return " ".join(["revzoo bench", *argv]).strip()


def write_results(results: dict[str, Any], out: Path, *, plot: bool = True) -> list[Path]:
    """Writes `out`/bench.md and bench.json (together, atomically), and memory.png if `plot` and matplotlib is
    installed; returns the paths written. Called after every part of a run, so a stopped run keeps its results."""
    out.mkdir(parents=True, exist_ok=True)
    command = _command()
    provenance = {"command": command, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                  "revzoo": __version__}
    report = format_results(results)
    written = atomic_write_all({
        out / "bench.json": lambda tmp: tmp.write_text(json.dumps({**results, "provenance": provenance}, indent=2)),
        out / "bench.md": lambda tmp: tmp.write_text(f"Measured with `{command}`.\n\n{report}\n"),
    })
    if plot:
        try:
            written += filter(None, [_plot(results, out / "memory.png")])
        except ImportError:
            print("matplotlib is not installed (pip install 'revzoo[plot]'): no plot", file=sys.stderr)
    return written


def _plot(results: dict[str, Any], path: Path) -> Path | None:
    """Writes a panel of memory against depth per part measured; returns the path, or None with nothing measured."""
    panels = [("transformer stack", results["stack"]["memory"])] if "stack" in results else []
    panels += [(name, arch["memory"]) for name, arch in results.get("architectures", {}).items()]
    panels = [(title, memory) for title, memory in panels if any(memory.values())]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (title, memory) in zip(axes.flat, panels):
        for kind, by_depth in memory.items():
            depths = sorted(int(d) for d in by_depth)
            figures = {int(d): value for d, value in by_depth.items()}
            axis.plot(depths, [figures[d] / MIB for d in depths], marker="o", label=kind)
        ticks = sorted({int(d) for by_depth in memory.values() for d in by_depth})
        axis.set_xticks(ticks, [str(d) for d in ticks])
        axis.set_title(title)
        axis.set_xlabel("depth (blocks)")
        axis.set_ylabel("peak activation memory (MiB)")
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
