"""`revzoo bench`: every configuration at equal work, checked against plain autograd before it is timed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from revzoo.bench import _bench, _models
from revzoo.bench._models import STACK_KINDS, Setting, StackConfig, build_stack, gradient_difference, stack_step
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
    results = _bench.run_bench((1, 2), 2, rounds=1, config=TINY, out_dir=str(tmp_path), architectures=False)
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
