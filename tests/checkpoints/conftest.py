"""The checkpoint tests' fixtures: a plugin with a tied-embedding architecture and a fake format, a saved model."""

from __future__ import annotations

import pytest
import torch

import revzoo
from helpers import TiedPlugin


@pytest.fixture
def tied_plugin(register_plugin) -> None:
    register_plugin(TiedPlugin(), name="checkpoint-test")


@pytest.fixture
def saved(tmp_path, tied_plugin):
    torch.manual_seed(0)
    model = revzoo.create("tied-rev")
    return model, revzoo.save(model, tmp_path / "m.safetensors")
