"""The example plugin's own tests: registered in isolation with revzoo.testing, as any plugin's tests can be."""

from __future__ import annotations

import pytest
import revzoo_example
import torch

import revzoo
import revzoo.testing


@pytest.fixture
def zoo():
    """Only this plugin is registered during a test; revzoo's registry is as it was afterwards."""
    with revzoo.testing.isolated_plugins(revzoo_example) as names:
        yield names


def test_registers_both_forms(zoo) -> None:
    assert revzoo.list_models() == ["conv1d", "conv1d-rev"]
    assert revzoo.plugins_info()[0]["models"] == ["conv1d"]


def test_reversible_gradients_match_autograd(zoo) -> None:
    model = revzoo.create("conv1d-rev", depth=3).double()
    tokens = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    report = revzoo.check_reversible(model, tokens)
    assert report.max_grad_diff < 1e-10


def test_saved_and_loaded(zoo, tmp_path) -> None:
    model = revzoo.create("conv1d-rev", depth=2)
    path = revzoo.save(model, tmp_path / "conv1d.safetensors")
    tokens = torch.randint(0, 32, (2, 16))
    torch.testing.assert_close(revzoo.load(path)(tokens), model(tokens), rtol=0, atol=0)
