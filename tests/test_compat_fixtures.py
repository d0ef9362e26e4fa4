"""Checkpoint files written by earlier revzoo releases still load and compute what they computed then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import revzoo

GENERATIONS = sorted((Path(__file__).parent / "fixtures" / "compat").iterdir())
FILES = [path for folder in GENERATIONS for path in sorted(folder.glob("*.safetensors")) if ".outputs." not in path.name]


def test_there_are_fixtures() -> None:
    assert len(FILES) >= 3


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_old_file_loads_and_gives_the_same_outputs(path: Path, builtin_plugins: list[str]) -> None:
    model = revzoo.load(path).eval()
    name = revzoo.read_metadata(path)["architecture"]
    args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(*args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    want = load_file(str(path.with_name(path.stem + ".outputs.safetensors")))["output"]
    torch.testing.assert_close(out, want, rtol=0, atol=0)
