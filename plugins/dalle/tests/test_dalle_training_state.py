"""Training state beside a model, without pickle: resuming takes the same next steps as not stopping,
and DALLE-pytorch's opt_state/scheduler_state/epoch travel through import and export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES
from revzoo import load_training_state, save_training_state

SMALL = dict(dim=16, depth=2, heads=2, dim_head=8, num_text_tokens=20, text_seq_len=3, image_size=8,
             vae_num_layers=1, num_image_tokens=8, vae_hidden_dim=4, vae_codebook_dim=4)


pytestmark = pytest.mark.usefixtures("dalle_plugin")


def _step(model, optimizer, scheduler, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 20, (2, 3), generator=generator)
    image = torch.randint(0, 8, (2, 16), generator=generator)
    model(text, image, return_loss=True).backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def _trainer(model):
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([{"params": trainable[::2], "lr": 1e-2}, {"params": trainable[1::2], "lr": 3e-3}])
    return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)


def _trained_and_saved(tmp_path: Path, steps: int, epoch: int):
    """A small dalle-rev after `steps` steps of `_trainer`, saved with its training state beside it."""
    torch.manual_seed(0)
    model = revzoo.create("dalle-rev", **SMALL)
    optimizer, scheduler = _trainer(model)
    for seed in range(steps):
        _step(model, optimizer, scheduler, seed)
    weights = revzoo.save(model, tmp_path / "m.safetensors")
    state = save_training_state(tmp_path / "m.training.safetensors", model, optimizer, scheduler, epoch=epoch)
    return model, optimizer, scheduler, weights, state


def test_resuming_takes_the_same_steps(tmp_path: Path) -> None:
    model, optimizer, scheduler, weights, state = _trained_and_saved(tmp_path, steps=3, epoch=4)
    with safe_open(str(state), framework="pt") as file:  # tensors by parameter name, the rest JSON
        assert any(key.endswith("/exp_avg_sq") for key in file.keys())
    for seed in range(3, 5):
        _step(model, optimizer, scheduler, seed)

    resumed = revzoo.load(weights)
    optimizer2, scheduler2 = _trainer(resumed)
    assert load_training_state(state, resumed, optimizer2, scheduler2) == 4
    assert scheduler2.get_last_lr() == pytest.approx([1e-2 * 0.9**3, 3e-3 * 0.9**3])
    for seed in range(3, 5):
        _step(resumed, optimizer2, scheduler2, seed)
    for (name, expected), actual in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=name)


def test_state_loads_into_an_optimizer_over_the_parameters_in_another_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = revzoo.create("dalle-rev", **SMALL)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.zero_grad()
    model(torch.tensor([[1, 2, 3]]), torch.zeros(1, 16, dtype=torch.long), return_loss=True).backward()
    optimizer.step()
    state = save_training_state(tmp_path / "t.safetensors", model, optimizer)
    reversed_optimizer = torch.optim.Adam(list(reversed([p for p in model.parameters() if p.requires_grad])), lr=1e-2)
    load_training_state(state, model, reversed_optimizer)
    for parameter in model.parameters():
        if parameter.requires_grad:
            assert torch.equal(reversed_optimizer.state[parameter]["exp_avg"], optimizer.state[parameter]["exp_avg"])
    other = torch.optim.Adam([next(model.parameters())])
    with pytest.raises(revzoo.CheckpointError, match="the saved optimizer is over other parameters"):
        load_training_state(state, model, other)


FIXTURES = SHARED_FIXTURES / "dalle"


def test_import_writes_dalle_pytorch_training_state_and_resumes_with_upstreams_next_step(tmp_path: Path) -> None:
    """resume.pt: two Adam steps in DALLE-pytorch 1.6.6; the third step there is in calls_reference.pt."""
    from revzoo_dalle import read_dalle_pytorch

    expected = torch.load(FIXTURES / "calls_reference.pt", weights_only=True)["resume"]
    model = revzoo.load(revzoo.import_checkpoint("dalle-pytorch", FIXTURES / "resume.pt", tmp_path / "m.safetensors"))
    state = tmp_path / "m.training.safetensors"
    optimizer = torch.optim.Adam(list(reversed([p for p in model.parameters() if p.requires_grad])), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert load_training_state(state, model, optimizer, scheduler) == 3
    model.train()
    loss = model(expected["text"], expected["image"], return_loss=True)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step(loss.item())
    after = read_dalle_pytorch({**torch.load(FIXTURES / "resume.pt", weights_only=True), "weights": expected["after"]})
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, after.tensors[name], rtol=0, atol=1e-5, msg=name)
    assert optimizer.param_groups[0]["lr"] == expected["lr_after"]


def _json_like(value):
    """What JSON keeps of a value (tuples become lists)."""
    if isinstance(value, dict):
        return {key: _json_like(item) for key, item in value.items()}
    return [_json_like(item) for item in value] if isinstance(value, (list, tuple)) else value


def test_cli_import_then_export_gives_back_upstreams_training_state(tmp_path: Path, capsys) -> None:
    from revzoo.cli import main

    assert main(["import", "dalle-pytorch", str(FIXTURES / "resume.pt"), str(tmp_path / "m.safetensors")]) == 0
    assert "m.training.safetensors (optimizer state of 32 parameters, epoch 3)" in capsys.readouterr().out
    assert main(["export", "dalle-pytorch", str(tmp_path / "m.safetensors"), str(tmp_path / "back.pt")]) == 0
    original = torch.load(FIXTURES / "resume.pt", weights_only=True)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert back["epoch"] == 3
    assert back["scheduler_state"] == original["scheduler_state"]
    assert back["opt_state"]["param_groups"] == _json_like(original["opt_state"]["param_groups"])
    assert sorted(back["opt_state"]["state"]) == sorted(original["opt_state"]["state"]) == list(range(32))
    for index, entries in original["opt_state"]["state"].items():
        for key, tensor in entries.items():
            assert torch.equal(back["opt_state"]["state"][index][key], tensor), (index, key)


@pytest.mark.parametrize("name", ["seq_full_defaults", "rev_all_types", "rev_shared_stable", "seq_conv_shift"])
def test_export_lists_weights_in_upstreams_module_order(tmp_path: Path, name: str) -> None:
    """Upstream's optimizer indexes parameters in its module order: the exported state dict must follow it."""
    path = revzoo.import_checkpoint("dalle-pytorch", FIXTURES / f"{name}.pt", tmp_path / "m.safetensors")
    revzoo.export_checkpoint("dalle-pytorch", path, tmp_path / "back.pt")
    original = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back["weights"]) == list(original["weights"])
    assert back["opt_state"]["param_groups"][0]["params"] == original["opt_state"]["param_groups"][0]["params"]


def test_exported_opt_state_resumes_an_optimizer_over_upstreams_parameter_order(tmp_path: Path) -> None:
    """Trained in revzoo, exported: torch's own load_state_dict into an optimizer over the parameters in upstream's
    order (as train_dalle.py builds it) takes the same step as the revzoo optimizer that was saved."""
    from revzoo_dalle.checkpoint import upstream_parameter_names

    model, optimizer, scheduler, saved, _ = _trained_and_saved(tmp_path, steps=2, epoch=2)
    exported = torch.load(revzoo.export_checkpoint("dalle-pytorch", saved, tmp_path / "m.pt"), weights_only=True)

    resumed = revzoo.load(saved)
    count = sum(len(group["params"]) for group in exported["opt_state"]["param_groups"])
    order = upstream_parameter_names(exported["weights"], "reversible", count)
    params = dict(resumed.named_parameters())
    groups = exported["opt_state"]["param_groups"]  # the saved optimizer's two groups, by upstream index
    upstream_optimizer = torch.optim.Adam([{"params": [params[order[i]] for i in group["params"]]} for group in groups])
    upstream_optimizer.load_state_dict(exported["opt_state"])
    upstream_scheduler = torch.optim.lr_scheduler.ExponentialLR(upstream_optimizer, gamma=0.9)
    upstream_scheduler.load_state_dict(exported["scheduler_state"])
    for seed in range(2, 4):
        _step(model, optimizer, scheduler, seed)
        _step(resumed, upstream_optimizer, upstream_scheduler, seed)
    for (name, expected), actual in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=name)
