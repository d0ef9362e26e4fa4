"""Checkpoint files written by earlier revzoo releases still load and compute what they computed then.

The outputs were recorded on another machine, so they are compared within a few rounding steps
of their dtype (helpers.assert_close_across_machines), not bit for bit: each file's metadata
names the torch and CPU that recorded it, where the release that wrote it kept them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import revzoo
from helpers import FIXTURES, assert_close_across_machines

GENERATIONS = sorted((FIXTURES / "compat").iterdir())
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
    with safe_open(str(path.with_name(path.stem + ".outputs.safetensors")), "pt") as recorded:
        want, made_on = recorded.get_tensor("output"), (recorded.metadata() or {}).get("made_on", "an unrecorded machine")
    assert_close_across_machines(out, want, msg=f"recorded on {made_on}: ")
