"""`revzoo bench`: activation memory against depth, and step time, of every form, side by side.

Part 1, a transformer stack (pre-norm attention + feed-forward blocks) as sequential,
reversible, per-sub-layer `torch.utils.checkpoint`, and revlib / memcnn where installed, all at
equal work (the same blocks at full width); before anything is timed, each configuration's
gradients are checked against plain autograd of the function it computes.
Part 2, the architectures of revzoo's own plugins (or those named with `--architectures`)
with a small config and example inputs, in their two forms and with checkpointed blocks.
On the CPU, memory is measured per configuration in its own process (resident peak); on
CUDA, in one process (`torch.cuda.max_memory_allocated`). Times alternate configurations in
one process and are reported relative to the sequential form. The recompute lower bound is
the sequential step plus one no-grad forward.

Every option is checked before anything is measured. The results are written after each
part, so a run that stops keeps what it measured; off a terminal a line per stage goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import check_device
from ..errors import ConfigError
from ..registry import get_architecture, list_models, loaded_registry, plugins_info, resolve
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
from ._progress import Progress
from ._report import format_results, write_results

__all__ = ["FULL", "QUICK", "Plan", "main", "run_bench", "select_architectures"]

GRADIENT_TOLERANCE = 1e-9  # float64; the engine's own tests hold to 1e-10 absolute on small stacks
NO_FILES = "-"  # --out -: print the report only


@dataclass(frozen=True)
class Plan:
    """What a run measures: the stack's depths (memory) and time depth, the architectures' likewise, the timing
    rounds and the stack's size."""

    depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    time_depth: int = 16
    arch_depths: tuple[int, ...] = (4, 16, 64)
    arch_time_depth: int = 16
    rounds: int = 5
    config: StackConfig = StackConfig()

    def check(self) -> None:
        """Raises ConfigError naming the option of the first value that cannot be measured (before any work)."""
        for option, values in (("--depths", self.depths), ("--time-depth", [self.time_depth]),
                               ("--arch-depths", self.arch_depths), ("--arch-time-depth", [self.arch_time_depth]),
                               ("--rounds", [self.rounds]), *((f"--{field.name}", [getattr(self.config, field.name)])
                                                              for field in dataclasses.fields(StackConfig))):
            if not values or any(value < 1 for value in values):
                raise ConfigError(f"{option} {' '.join(map(str, values))}: must be at least 1")
        if self.config.dim % self.config.heads:
            raise ConfigError(f"--dim {self.config.dim} is not a multiple of --heads {self.config.heads}")


FULL = Plan()
# --quick: a smoke run of every part in a minute or two on 2 cores; the architectures at one depth (a process each)
QUICK = Plan(depths=(2, 8), time_depth=2, arch_depths=(2,), arch_time_depth=2, rounds=2,
             config=StackConfig(dim=64, heads=2, seq=128, batch=2))


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


def benchable_architectures() -> list[str]:
    """Returns every registered architecture the bench can measure: example inputs, a depth option, both forms."""
    names = []
    for name in list_models(exclude="*-rev"):
        spec = get_architecture(name)
        if spec.example_inputs is not None and "depth" in spec.defaults and len(spec.forms) == 2:
            names.append(name)
    return names


def select_architectures(patterns: Sequence[str] | None = None) -> list[str]:
    """Returns the architectures to bench: by default those of revzoo's own plugins (an installed third-party
    plugin's only when named); else those matching the names or fnmatch patterns, each of which must match one.

    Raises UnknownModelError for an unknown name, ConfigError for a pattern matching nothing benchable.
    """
    benchable = benchable_architectures()
    if patterns is None:
        builtin = {model for plugin in plugins_info() if plugin["builtin"] for model in plugin["models"]}
        return [name for name in benchable if name in builtin]
    chosen: list[str] = []
    for pattern in patterns:
        names = list_models(pattern) if re.search(r"[*?[]", pattern) else [pattern]
        matched = [name for name in dict.fromkeys(resolve(name)[0].name for name in names) if name in benchable]
        if not matched:
            raise ConfigError(f"--architectures {pattern!r}: no architecture the bench can measure matches "
                              f"(it needs example inputs, a depth option and both forms); these can: "
                              f"{', '.join(benchable) or 'none'} (see: revzoo list)")
        chosen += [name for name in matched if name not in chosen]
    return chosen


def _check_out(out_dir: str) -> Path:
    """Returns `out_dir` as a directory made and proven writable now, or raises ConfigError (before any work)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir!r} is a file; name a directory for bench.md, bench.json and memory.png "
                          f"(or --out {NO_FILES} to write nothing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ConfigError(f"--out {out_dir!r}: cannot write there ({err.strerror or err}); name a writable "
                          f"directory (or --out {NO_FILES} to write nothing)") from err
    return out


def run_bench(
    depths: tuple[int, ...] | None = None,
    time_depth: int | None = None,
    arch_depths: tuple[int, ...] | None = None,
    arch_time_depth: int | None = None,
    rounds: int | None = None,
    config: StackConfig | None = None,
    quick: bool = False,
    out_dir: str | None = "bench-results",
    architectures: Sequence[str] | None = None,
    setting: Setting | None = None,
) -> dict[str, Any]:
    """Measures everything, prints the tables, writes `bench.md`, `bench.json` and `memory.png` to `out_dir`.

    Options left None come from QUICK with `quick`, else from FULL. `architectures`: names or fnmatch
    patterns (None: the built-in plugins' architectures; empty: none). `out_dir` None or "-": no files.
    `setting` is where the steps run (default: the CPU in float32). Every option is checked before any
    measuring; the files are rewritten after each part, and a run that fails or is interrupted writes
    and prints what it measured, noting where it stopped, before the error propagates.
    """
    given = {"depths": depths, "time_depth": time_depth, "arch_depths": arch_depths,
             "arch_time_depth": arch_time_depth, "rounds": rounds, "config": config}
    plan = dataclasses.replace(QUICK if quick else FULL, **{key: value for key, value in given.items()
                                                             if value is not None})
    plan.check()
    plan = dataclasses.replace(plan, depths=tuple(sorted(set(plan.depths))),
                               arch_depths=tuple(sorted(set(plan.arch_depths))))
    setting = setting or Setting()
    arch_names = select_architectures(architectures)
    out = None if out_dir in (None, NO_FILES) else _check_out(out_dir)
    kinds = available_stack_kinds()
    results: dict[str, Any] = {
        "setting": {**asdict(setting), "description": setting.describe()},
        "stack": {"config": asdict(plan.config), "time_depth": plan.time_depth, "memory": {k: {} for k in kinds}},
        "architectures": {},
    }
    total = 2 + len(plan.depths) * len(kinds) + len(arch_names) * (len(plan.arch_depths) * len(ARCH_KINDS) + 1)
    progress = Progress("revzoo bench", total)
    try:
        stage = f"stack gradients at depth {plan.time_depth}"
        progress.step(stage)
        results["stack"]["gradient_check"] = check_gradients(plan.config, plan.time_depth, kinds, setting.device)
        for depth in plan.depths:
            for kind in kinds:
                stage = f"stack {kind} depth {depth}"
                progress.step(stage)
                values = [kind, str(depth), json.dumps(asdict(plan.config))]
                results["stack"]["memory"][kind][depth] = _memory(setting, "--measure-stack", values)
        _save(results, out)
        stage = f"stack time at depth {plan.time_depth}"
        progress.step(stage)
        results["stack"]["time"] = _stack_times(plan.config, plan.time_depth, kinds, plan.rounds, setting,
                                                progress.note)
        _save(results, out)
        for name in arch_names:
            memory: dict[str, dict[int, int]] = {kind: {} for kind in ARCH_KINDS}
            results["architectures"][name] = {"memory": memory, "time_depth": plan.arch_time_depth,
                                              "small": dict(get_architecture(name).small)}
            for depth in plan.arch_depths:
                for kind in ARCH_KINDS:
                    stage = f"{name} {kind} depth {depth}"
                    progress.step(stage)
                    memory[kind][depth] = _memory(setting, "--measure-arch", [name, kind, str(depth)])
            stage = f"{name} time at depth {plan.arch_time_depth}"
            progress.step(stage)
            runs = {kind: arch_step(name, plan.arch_time_depth, kind, setting)[1] for kind in ARCH_KINDS}
            results["architectures"][name]["time"] = alternate_times(runs, "sequential", plan.rounds, progress.note)
            _save(results, out)
    except BaseException as err:  # Ctrl-C too; a SIGTERM or SIGKILL leaves the files _save wrote after each part
        progress.close(stopped=stage)
        results["incomplete"] = f"stopped during {stage}: {type(err).__name__}: {err}".splitlines()[0]
        _finish(results, out, plot=False)
        raise
    progress.close()
    _finish(results, out, plot=True)
    return results


def _save(results: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        write_results(results, out, plot=False)


def _finish(results: dict[str, Any], out: Path | None, plot: bool) -> None:
    print(format_results(results), flush=True)
    if out is not None:
        print("wrote " + ", ".join(map(str, write_results(results, out, plot=plot))), flush=True)


def _stack_times(
    config: StackConfig, depth: int, kinds: tuple[str, ...], rounds: int, setting: Setting, progress=None
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
    times = alternate_times(runs, "sequential", rounds, progress)
    times["lower bound"] = 1.0 + times.pop("no-grad forward")
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="revzoo bench", description=__doc__.splitlines()[0])
    parser.add_argument("--measure-stack", nargs=3, metavar=("KIND", "DEPTH", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--measure-arch", nargs=3, metavar=("NAME", "KIND", "DEPTH"), help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--precision", choices=("float32", "bf16"),
                        help="bf16: steps under bf16 autocast (default on cuda); float32: none (default on cpu)")
    for field in ("dim", "heads", "seq", "batch"):
        parser.add_argument(f"--{field}", type=int, metavar="N", help=f"the transformer stack's {field} (default "
                            f"{getattr(FULL.config, field)}, --quick {getattr(QUICK.config, field)})")
    for option, help_text in (("depths", "the stack's depths for memory"), ("arch-depths", "the architectures' depths "
                              "for memory")):
        field = option.replace("-", "_")
        parser.add_argument(f"--{option}", type=int, nargs="+", metavar="N",
                            help=f"{help_text} (default {' '.join(map(str, getattr(FULL, field)))}, --quick "
                                 f"{' '.join(map(str, getattr(QUICK, field)))})")
    for option, help_text in (("time-depth", "the stack's depth for timing and the gradient check"),
                              ("arch-time-depth", "the architectures' depth for timing"),
                              ("rounds", "timing rounds, each a ratio to sequential; the median is shown")):
        field = option.replace("-", "_")
        parser.add_argument(f"--{option}", type=int, metavar="N",
                            help=f"{help_text} (default {getattr(FULL, field)}, --quick {getattr(QUICK, field)})")
    parser.add_argument("--architectures", nargs="+", metavar="NAME",
                        help="the architectures to bench, names or fnmatch patterns (default: those of revzoo's own "
                             "plugins; name an installed plugin's to include it)")
    parser.add_argument("--no-architectures", action="store_true", help="only the transformer stack")
    parser.add_argument("--quick", action="store_true",
                        help="a small configuration for a smoke run (about a minute on 2 cores)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help=f"directory for bench.md, bench.json, memory.png (default %(default)s; {NO_FILES}: none)")
    args = parser.parse_args(argv)
    if args.measure_stack or args.measure_arch:  # a child process of _memory
        setting = Setting(**json.loads(args.setting)) if args.setting else Setting()
        flag = "--measure-stack" if args.measure_stack else "--measure-arch"
        print(json.dumps({"bytes": _measure(flag, args.measure_stack or args.measure_arch, setting)}))
        return
    if args.no_architectures and args.architectures:
        raise ConfigError("--no-architectures and --architectures exclude each other; give one")
    setting = _setting(args.device, args.precision)
    base = QUICK.config if args.quick else FULL.config
    config = StackConfig(**{field: getattr(base, field) if getattr(args, field) is None else getattr(args, field)
                            for field in ("dim", "heads", "seq", "batch")})
    run_bench(None if args.depths is None else tuple(args.depths), args.time_depth,
              None if args.arch_depths is None else tuple(args.arch_depths), args.arch_time_depth, args.rounds,
              config=config, quick=args.quick, out_dir=args.out,
              architectures=() if args.no_architectures else args.architectures, setting=setting)


def _setting(device: str, precision: str | None) -> Setting:
    """Returns the Setting of `--device` and `--precision`, refusing a device this machine does not have."""
    kind = check_device(device, kinds=("cpu", "cuda"), option="--device").type
    bf16 = kind != "cpu" if precision is None else precision == "bf16"
    return Setting(device=device, bf16=bf16)


if __name__ == "__main__":
    main()
