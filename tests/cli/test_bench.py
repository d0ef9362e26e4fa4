"""`revzoo bench`: every configuration at equal work, checked against plain autograd before it is timed."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from helpers import plugin_of, tiny_spec
from revzoo.bench import _bench, _models
from revzoo.bench._models import STACK_KINDS, Setting, StackConfig, build_stack, gradient_difference, stack_step
from revzoo.bench._progress import Progress
from revzoo.cli import main
from revzoo.errors import ConfigError

TINY = StackConfig(dim=16, heads=2, seq=8, batch=2)


def _needs(kind: str) -> None:
    if kind in ("revlib", "memcnn") and importlib.util.find_spec(kind) is None:
        pytest.skip(f"{kind} is not installed (pip install --no-deps {kind})")


@pytest.mark.parametrize("kind", STACK_KINDS)
def test_every_configuration_has_the_gradients_of_plain_autograd(kind: str) -> None:
    _needs(kind)
    assert gradient_difference(TINY, 3, kind, seq=4) < 1e-12


@pytest.mark.parametrize("kind", STACK_KINDS)
def test_every_configuration_runs_the_same_blocks_at_full_width(kind: str) -> None:
    """Equal work: the same parameters (so the same sub-layer widths) as revzoo's reversible stack."""
    _needs(kind)
    model, pairs = build_stack(TINY, 3, kind)
    reference = build_stack(TINY, 3, "reversible")[0]
    assert sorted(p.shape for p in model.parameters()) == sorted(p.shape for p in reference.parameters())
    assert {id(p) for p in model.parameters()} == {id(p) for f, g in pairs for p in [*f.parameters(), *g.parameters()]}


@pytest.mark.parametrize("kind", ["revlib", "memcnn"])
def test_the_libraries_compute_revzoos_reversible_function(kind: str) -> None:
    _needs(kind)
    torch.manual_seed(0)
    model = build_stack(TINY, 3, kind)[0]
    torch.manual_seed(0)
    reference = build_stack(TINY, 3, "reversible")[0]
    x = torch.randn(2, 8, TINY.dim)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


def test_the_check_fails_when_a_configuration_computes_another_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_models.STACK_FUNCTION, "checkpoint", "reversible")  # checkpoint runs the sequential form
    assert gradient_difference(TINY, 2, "checkpoint", seq=4) > 1e-3
    with pytest.raises(RuntimeError, match=r": checkpoint .* nothing was timed"):
        _bench.check_gradients(TINY, 2, ("sequential", "checkpoint"), "cpu")


def test_a_step_under_bf16_autocast_gives_parameters_gradients() -> None:
    model, step = stack_step(TINY, 2, "reversible", Setting(device="cpu", bf16=True))
    step()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_the_bench_reports_the_check_and_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_bench, "peak_in_subprocess", lambda module, args: {"bytes": 2**20})
    monkeypatch.setattr(_bench, "available_stack_kinds", lambda: ("sequential", "reversible", "checkpoint"))
    results = _bench.run_bench((1, 2), 2, rounds=1, config=TINY, out_dir=str(tmp_path), architectures=())
    assert set(results["stack"]["gradient_check"]) == {"sequential", "reversible", "checkpoint"}
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["setting"] == {"device": "cpu", "bf16": False, "description": "cpu, float32"}
    report = (tmp_path / "bench.md").read_text()
    assert "On cpu, float32; memory: resident peak" in report and "largest relative difference" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_on_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--device", "cuda", "--quick"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "CUDA is not available" in error and "--device cpu" in error


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(ConfigError, match="'tpu' is not a device"):
        _bench._setting("tpu", None)


def test_cuda_defaults_to_bf16_and_cpu_to_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _bench._setting("cuda", None) == Setting("cuda", bf16=True)
    assert _bench._setting("cuda", "float32") == Setting("cuda", bf16=False)
    assert _bench._setting("cpu", None) == Setting("cpu", bf16=False)


def benchable_tiny() -> object:
    """A third-party plugin's architecture the bench can measure (its input read from the defaults, not the blocks,
    which the checkpoint configuration wraps)."""
    return plugin_of(tiny_spec(example_inputs=lambda model, generator: ((torch.randn(2, 4, generator=generator),), {})))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each configuration measured in its own process, recorded and given 1 MiB without starting one."""
    calls: list[list[str]] = []

    def peak(module: str, args: list[str]) -> dict[str, int]:
        calls.append(args)
        return {"bytes": 2**20}

    monkeypatch.setattr(_bench, "peak_in_subprocess", peak)
    monkeypatch.setattr(_bench, "available_stack_kinds", lambda: ("sequential", "reversible", "checkpoint"))
    return calls


def test_quick_measures_the_stack_at_two_depths_and_each_architecture_at_one(
    measured: list[list[str]], register_plugin, tmp_path: Path
) -> None:
    """--quick is a smoke run: a process per configuration costs seconds, so it starts few (it started 15 here)."""
    register_plugin(benchable_tiny(), name="third-party")
    results = _bench.run_bench(quick=True, config=TINY, out_dir=str(tmp_path), architectures=["tiny"])
    assert [args[0] for args in measured] == ["--measure-stack"] * 6 + ["--measure-arch"] * 3
    assert sorted(results["stack"]["memory"]["reversible"]) == [2, 8] and results["stack"]["time_depth"] == 2
    assert sorted(results["architectures"]["tiny"]["memory"]["reversible"]) == [2]


def test_a_memory_figure_of_zero_bytes_gives_no_ratio_and_says_why(
    measured: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A small configuration's step can fit in memory the process already holds (measured 0 bytes, 2 runs of 3):
    the run went on to divide by it (ZeroDivisionError after 10 minutes, nothing written)."""
    monkeypatch.setattr(_bench, "peak_in_subprocess", lambda module, args: {"bytes": 0 if args[2] == "1" else 2**20})
    _bench.run_bench((1, 2), 1, rounds=1, config=TINY, out_dir=str(tmp_path), architectures=())
    report = (tmp_path / "bench.md").read_text()
    assert "| 1 | 0.0 | 0.0 | 0.0 | n/a |" in report and "| 2 | 1.0 | 1.0 | 1.0 | 1.00 |" in report
    assert "reversible memory at depth 2 / depth 1: n/a" in report
    assert "sequential at depth 1, reversible at depth 1 measured 0 bytes" in report


def test_a_failing_part_keeps_what_was_measured_before_it(
    measured: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("timing went wrong\nsecond line")

    monkeypatch.setattr(_bench, "_stack_times", fail)
    with pytest.raises(RuntimeError, match="timing went wrong"):
        _bench.run_bench((1, 2), 1, rounds=1, config=TINY, out_dir=str(tmp_path), architectures=())
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["stack"]["memory"]["reversible"] == {"1": 2**20, "2": 2**20}
    assert written["incomplete"] == "stopped during stack time at depth 1: RuntimeError: timing went wrong"
    report = (tmp_path / "bench.md").read_text()
    assert "**Incomplete**: stopped during stack time at depth 1" in report and "| 2 | 1.0 | 1.0 | 1.0 | 1.00 |" in report
    printed = capsys.readouterr()
    assert "| 2 | 1.0 | 1.0 | 1.0 | 1.00 |" in printed.out  # printed too
    assert printed.err.splitlines()[-1].startswith("revzoo bench: stopped during stack time at depth 1 (")


def test_results_are_on_disk_after_each_part_before_the_run_ends(
    measured: list[list[str]], monkeypatch: pytest.MonkeyPatch, register_plugin, tmp_path: Path
) -> None:
    """A run killed outright (SIGKILL, a CI timeout) still leaves the parts it finished."""
    seen = []

    def peak(module: str, args: list[str]) -> dict[str, int]:
        seen.append((tmp_path / "bench.json").is_file())
        return {"bytes": 2**20}

    monkeypatch.setattr(_bench, "peak_in_subprocess", peak)
    register_plugin(benchable_tiny(), name="third-party")
    _bench.run_bench((1,), 1, arch_depths=(1,), rounds=1, config=TINY, out_dir=str(tmp_path), architectures=["tiny"])
    assert seen == [False] * 3 + [True] * 3  # the stack's files were written before the architecture's first measure


def test_off_a_terminal_each_stage_is_a_line_on_stderr(measured: list[list[str]], capsys: pytest.CaptureFixture) -> None:
    _bench.run_bench((1, 2), 1, rounds=2, config=TINY, out_dir=None, architectures=())
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "revzoo bench: 1/8 stack gradients at depth 1",
        *(f"revzoo bench: {2 + i}/8 stack {kind} depth {depth}" for i, (depth, kind) in enumerate(
            (d, k) for d in (1, 2) for k in ("sequential", "reversible", "checkpoint"))),
        "revzoo bench: 8/8 stack time at depth 1", "revzoo bench: round 1/2", "revzoo bench: round 2/2",
        "revzoo bench: done",
    ]


def test_progress_is_a_bar_on_a_terminal_and_a_line_per_n_steps_elsewhere() -> None:
    log = io.StringIO()
    with Progress("training", 5, every=2, stream=log) as progress:
        for step in range(5):
            progress.step(f"loss {step}")
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == [
        "training: 2/5 loss 1", "training: 4/5 loss 3", "training: 5/5 loss 4", "training: done"]
    terminal = Terminal()
    progress = Progress("training", 5, stream=terminal)
    assert progress.bar is not None and not progress.bar.disable
    progress.step("loss 0")
    progress.close()
    assert "training:" in terminal.getvalue() and "1/5" in terminal.getvalue()


@pytest.mark.parametrize("options", [
    ["--depths", "0"], ["--depths", "4", "-2"], ["--arch-depths", "0"], ["--time-depth", "0"], ["--rounds", "0"],
    ["--quick", "--rounds", "0"], ["--heads", "0"], ["--dim", "10", "--heads", "3"],
    ["--out", "FILE"], ["--out", "FILE/sub"], ["--out", "/proc/revzoo-bench"],
    ["--architectures", "no-such-model"], ["--architectures", "none-like-this*"], ["--architectures", "tiny"],
    ["--no-architectures", "--architectures", "dalle"],
])
def test_bad_options_are_refused_in_one_line_before_anything_is_measured(
    options: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, register_plugin
) -> None:
    def measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured before the options were checked")

    register_plugin(plugin_of(tiny_spec(example_inputs=None)), name="third-party")  # tiny cannot be benched
    monkeypatch.setattr(_bench, "check_gradients", measuring)
    monkeypatch.setattr(_bench, "peak_in_subprocess", measuring)
    (tmp_path / "FILE").write_text("not a directory")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *options]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("revzoo: error: "), error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["FILE"]


def test_by_default_only_the_built_in_architectures_are_benched(builtin_plugins, register_plugin) -> None:
    """An installed third-party plugin's architectures are benched only when named."""
    register_plugin(benchable_tiny(), name="third-party")
    default = _bench.select_architectures()
    assert "dalle" in default and "lie-transformer" in default and "tiny" not in default
    assert _bench.select_architectures(["tiny", "dalle-rev", "d*"]) == ["tiny", "dalle"]
    assert _bench.select_architectures([]) == []


def test_the_engine_bench_writes_no_files_with_out_dash(
    measured: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The engine part alone (README: `--no-architectures --out -`) once wrote bench-results/ into the working
    directory unasked (as tools/bench_engine.py)."""
    monkeypatch.chdir(tmp_path)
    small = ["--no-architectures", "--dim", "16", "--heads", "2", "--seq", "8", "--batch", "2", "--depths", "1",
             "--time-depth", "1", "--rounds", "1"]
    assert main(["bench", *small, "--out", "-"]) == 0 and list(tmp_path.iterdir()) == []
    assert "| 1 | 1.0 | 1.0 | 1.0 | 1.00 |" in capsys.readouterr().out
    assert main(["bench", *small, "--out", "engine"]) == 0
    assert sorted(path.name for path in (tmp_path / "engine").iterdir())[:2] == ["bench.json", "bench.md"]
