"""The README's DALLE-pytorch workflow, end to end and small: captioned folder -> VAE -> DALL-E -> `revzoo generate`."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

import revzoo
from helpers import TOOLS
from revzoo.cli import main

TOOL = TOOLS / "examples" / "train_dalle.py"


pytestmark = pytest.mark.usefixtures("dalle_plugin")


def _tool(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(TOOL), *argv])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(TOOL), run_name="__main__")
    assert stopped.value.code in (None, 0)


def test_train_then_generate_from_a_caption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    shapes, run = tmp_path / "shapes", tmp_path / "run"
    _tool(monkeypatch, "--write-shapes", str(shapes))
    assert len(list(shapes.glob("*.png"))) == len(list(shapes.glob("*.txt"))) == 12
    _tool(monkeypatch, str(shapes), str(run), "--vae-steps", "2", "--steps", "2", "--dim", "16", "--depth", "1",
          "--batch", "2")
    printed = capsys.readouterr()
    assert "VAE: 2 steps" in printed.out and "DALL-E: 2 steps" in printed.out and "try: revzoo generate" in printed.out
    progress = [line.split(", loss")[0] for line in printed.err.splitlines()]  # off a terminal: lines, not a bar
    assert progress[:2] == ["VAE: 1/2 steps", "VAE: 2/2 steps"]
    assert progress[3:5] == ["DALL-E: 1/2 steps", "DALL-E: 2/2 steps"]

    model = revzoo.load(run / "dalle.safetensors")
    assert model.vae is not None and model.revzoo_config["tokenizer"] == "clip"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    assert revzoo.load_training_state(run / "dalle.training.safetensors", model, optimizer) == 1
    assert main(["generate", str(run / "dalle.safetensors"), "a red square", "--num", "2", "--seed", "0",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
