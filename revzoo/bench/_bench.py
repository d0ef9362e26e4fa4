"""`revzoo bench`: activation memory against depth, and step time, of every form, side by side.

Part 1, a transformer stack (pre-norm attention + feed-forward blocks) as sequential,
reversible, per-sub-layer `torch.utils.checkpoint`, and revlib / memcnn where installed, all at
equal work (the same blocks at full width); before anything is timed, each configuration's
gradients are checked against plain autograd of the function it computes.
Part 2, each registered architecture with a small config and example inputs, in its two
forms and with checkpointed blocks. On the CPU, memory is measured per configuration in its
own process (resident peak); on CUDA, in one process (`torch.cuda.max_memory_allocated`).
Times alternate configurations in one process and are reported relative to the sequential
form. The recompute lower bound is the sequential step plus one no-grad forward.
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
from ..checkpoints import check_device
from ..registry import get_architecture, list_models, loaded_registry
from ._measure import alternate_times, measure_cuda_peak, measure_peak, peak_in_subprocess
from ._models import (
    ARCH_KINDS,
    Setting,
    StackConfig,
    arch_step,
    available_stack_kinds,
    gradient_difference,
    stack_step,
)

__all__ = ["main", "run_bench"]

MIB = 2**20
GRADIENT_TOLERANCE = 1e-9  # float64; the engine's own tests hold to 1e-10 absolute on small stacks


def _peak_of(model: torch.nn.Module, step, setting: Setting) -> int:
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    step()  # warm-up: lazy allocations are not activations
    if torch.device(setting.device).type == "cuda":
        return measure_cuda_peak(step, setting.device)
    return measure_peak(step)


def _measure(flag: str, values: list[str], setting: Setting) -> int:
    """Returns the peak of one configuration's training step, measured in this process."""
    if flag == "--measure-stack":
        kind, depth, config = values
        built = stack_step(StackConfig(**json.loads(config)), int(depth), kind, setting)
    else:
        loaded_registry()  # load the plugins before measuring
        name, kind, depth = values
        built = arch_step(name, int(depth), kind, setting)
    return _peak_of(*built, setting)


def _memory(setting: Setting, flag: str, values: list[str]) -> int:
    """Returns one configuration's peak: on the CPU in a fresh process (resident size), on CUDA here (allocator)."""
    if torch.device(setting.device).type == "cuda":
        return _measure(flag, values, setting)
    args = [flag, *values, "--setting", json.dumps(asdict(setting))]
    return peak_in_subprocess("revzoo.bench._bench", args)["bytes"]


def check_gradients(config: StackConfig, depth: int, kinds: tuple[str, ...], device: str) -> dict[str, float]:
    """Returns each configuration's largest gradient difference from plain autograd of its function; raises if any
    is above GRADIENT_TOLERANCE, so that no configuration is timed that does not compute what it claims."""
    differences = {kind: gradient_difference(config, depth, kind, device) for kind in kinds}
    wrong = {kind: difference for kind, difference in differences.items() if not difference <= GRADIENT_TOLERANCE}
    if wrong:
        raise RuntimeError(
            f"gradients differ from plain autograd of the same function (float64, depth {depth}): "
            + ", ".join(f"{kind} {difference:.2e}" for kind, difference in wrong.items())
            + f" (tolerance {GRADIENT_TOLERANCE:.0e}); nothing was timed"
        )
    return differences


def _benchable_architectures() -> list[str]:
    names = []
    for name in list_models(exclude="*-rev"):
        spec = get_architecture(name)
        if spec.example_inputs is not None and "depth" in spec.defaults and len(spec.forms) == 2:
            names.append(name)
    return names


class _Progress:
    """A tqdm bar on stderr over the measurements, drawn only on a terminal (a plain line per step without tqdm)."""

    def __init__(self, total: int) -> None:
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, desc="revzoo bench", disable=not sys.stderr.isatty())
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
    setting: Setting | None = None,
) -> dict[str, Any]:
    """Measures everything, prints the tables, writes `bench.md`, `bench.json` and `memory.png` to `out_dir`.

    `setting` is where the steps run (default: the CPU in float32).
    """
    config = config or StackConfig()
    setting = setting or Setting()
    if quick:
        depths, time_depth, arch_depths, arch_time_depth, rounds = (2, 4, 8), 4, (2, 4), 4, 3
        config = StackConfig(dim=128, heads=4, seq=256, batch=2)
    kinds = available_stack_kinds()
    arch_names = _benchable_architectures() if architectures else []
    progress = _Progress(len(depths) * len(kinds) + 2 + len(arch_names) * (len(arch_depths) * len(ARCH_KINDS) + 1))
    progress.step(f"stack gradients at depth {time_depth}")
    checked = check_gradients(config, time_depth, kinds, setting.device)
    results: dict[str, Any] = {
        "setting": {**asdict(setting), "description": setting.describe()},
        "stack": {"config": asdict(config), "memory": {k: {} for k in kinds}, "gradient_check": checked},
        "architectures": {},
    }
    for depth in depths:
        for kind in kinds:
            progress.step(f"stack {kind} depth {depth}")
            values = [kind, str(depth), json.dumps(asdict(config))]
            results["stack"]["memory"][kind][depth] = _memory(setting, "--measure-stack", values)
    progress.step(f"stack time at depth {time_depth}")
    results["stack"]["time_depth"] = time_depth
    results["stack"]["time"] = _stack_times(config, time_depth, kinds, rounds, setting)
    for name in arch_names:
        memory = {kind: {} for kind in ARCH_KINDS}
        for depth in arch_depths:
            for kind in ARCH_KINDS:
                progress.step(f"{name} {kind} depth {depth}")
                memory[kind][depth] = _memory(setting, "--measure-arch", [name, kind, str(depth)])
        progress.step(f"{name} time")
        runs = {kind: arch_step(name, arch_time_depth, kind, setting)[1] for kind in ARCH_KINDS}
        times = alternate_times(runs, "sequential", rounds)
        results["architectures"][name] = {"memory": memory, "time": times, "time_depth": arch_time_depth,
                                          "small": dict(get_architecture(name).small)}
    progress.close()
    report = format_results(results)
    print(report)
    if out_dir is not None:
        _write(results, report, Path(out_dir))
    return results


def _stack_times(
    config: StackConfig, depth: int, kinds: tuple[str, ...], rounds: int, setting: Setting
) -> dict[str, float]:
    built = {kind: stack_step(config, depth, kind, setting) for kind in kinds}
    sequential = built["sequential"][0]
    x = torch.randn(config.batch, config.seq, config.dim).to(setting.device)

    def no_grad_forward() -> None:
        with torch.no_grad(), setting.autocast():
            sequential(x)
        setting.synchronize()

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


def _memory_method(setting: dict[str, Any]) -> str:
    if torch.device(setting["device"]).type == "cuda":
        return "`torch.cuda.max_memory_allocated` above the memory allocated before the step"
    return "resident peak above the resident size before the step, each configuration in its own process"


def format_results(results: dict[str, Any]) -> str:
    stack = results["stack"]
    config, times = stack["config"], stack["time"]
    setting = results.get("setting", {"device": "cpu", "description": "cpu, float32"})
    kinds = [k for k in times if k != "lower bound"]
    checked = stack.get("gradient_check", {})
    lines = [
        f"On {setting['description']}; memory: {_memory_method(setting)}.",
        "",
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
    lines += [
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
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--precision", choices=("float32", "bf16"),
                        help="bf16: steps under bf16 autocast (default on cuda); float32: none (default on cpu)")
    defaults = StackConfig()
    for field in ("dim", "heads", "seq", "batch"):
        parser.add_argument(f"--{field}", type=int, default=getattr(defaults, field),
                            help=f"the transformer stack's {field} (default %(default)s)")
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--time-depth", type=int, default=16)
    parser.add_argument("--arch-depths", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--arch-time-depth", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-architectures", action="store_true", help="only the transformer stack")
    parser.add_argument("--quick", action="store_true", help="a small configuration for a smoke run")
    parser.add_argument("--out", default="bench-results", help="directory for bench.md, bench.json, memory.png")
    args = parser.parse_args(argv)
    if args.measure_stack or args.measure_arch:  # a child process of _memory
        setting = Setting(**json.loads(args.setting)) if args.setting else Setting()
        flag = "--measure-stack" if args.measure_stack else "--measure-arch"
        print(json.dumps({"bytes": _measure(flag, args.measure_stack or args.measure_arch, setting)}))
        return
    setting = _setting(args.device, args.precision)
    config = StackConfig(dim=args.dim, heads=args.heads, seq=args.seq, batch=args.batch)
    run_bench(tuple(args.depths), args.time_depth, tuple(args.arch_depths), args.arch_time_depth, args.rounds,
              config=config, quick=args.quick, out_dir=args.out, architectures=not args.no_architectures,
              setting=setting)


def _setting(device: str, precision: str | None) -> Setting:
    """Returns the Setting of `--device` and `--precision`, refusing a device this machine does not have."""
    kind = check_device(device, kinds=("cpu", "cuda"), option="--device").type
    bf16 = kind != "cpu" if precision is None else precision == "bf16"
    return Setting(device=device, bf16=bf16)


if __name__ == "__main__":
    main()
