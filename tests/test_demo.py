"""`revzoo demo` end to end, with few training steps: it needs the DALL-E plugin through its entry point."""

from __future__ import annotations

import pytest

from revzoo.bench._demo import run_demo


@pytest.fixture
def dalle_entry_point(monkeypatch):
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "dalle")


def test_demo_writes_what_it_says(dalle_entry_point, tmp_path, capsys) -> None:
    run_demo(str(tmp_path), steps=2, vae_steps=2)
    out = capsys.readouterr().out
    assert "peak memory of one training step: reversible" in out
    assert "reloaded outputs identical: True" in out
    for name in ("dalle-rev.safetensors", "dalle-seq.safetensors", "dalle-rev-again.safetensors", "generated.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert str(tmp_path / name) in out
