"""Importing lie-transformer-pytorch 0.0.17 state dicts (fixtures written by tools/fixtures/make_lie_fixtures.py
with the real package; these tests do not need it)."""

from __future__ import annotations

import pytest
import revzoo_lie
import torch
from revzoo_lie import read_lie_transformer_pytorch
from revzoo_lie.groups import SE3

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "lie"
LAYOUTS = ("sequential", "reversible")



def _load(name: str):
    return torch.load(FIXTURES / name, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reads_config_form_and_every_tensor(layout):
    state = _load(f"upstream_{layout}.pt")
    imported = read_lie_transformer_pytorch(state, heads=2)
    assert imported.architecture == "lie-transformer"
    assert imported.form == layout
    expected = dict(dim=8, heads=2, dim_head=4, depth=2, dim_out=3, edge_dim=2, group="SE3", ff_mult=4)
    assert {key: imported.config[key] for key in expected} == expected
    if layout == "sequential":
        assert (imported.config["num_tokens"], imported.config["num_edge_types"]) == (5, 3)
    else:
        assert (imported.config["num_tokens"], imported.config["num_edge_types"]) == (None, None)
    model = revzoo_lie.build_lie_transformer(form=imported.form, **imported.config)
    missing, unexpected = model.load_state_dict(dict(imported.tensors), strict=True)
    assert not missing and not unexpected
    # every upstream tensor is used except the radius buffers; each attention tensor once though named twice
    radius = [key for key in state if key.endswith(".r")]
    assert len(radius) == 4
    assert sum(t.numel() for t in imported.tensors.values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imported_parts_compute_what_upstream_computed(layout):
    reference = _load(f"upstream_{layout}_reference.pt")
    imported = read_lie_transformer_pytorch(_load(f"upstream_{layout}.pt"), heads=2)
    model = revzoo_lie.build_lie_transformer(form=imported.form, **imported.config).double()
    model.load_state_dict(dict(imported.tensors))
    block = model.stack.blocks[0]
    group = SE3()
    elements = group.lift(reference["coords"], reference["rotations"])
    pairs = group.pair_coordinates(elements[:, :, None], elements[:, None, :])
    # upstream's pair [i, j] is log(g_j^-1 g_i), revzoo's is log(g_i^-1 g_j): inverse elements, opposite logs
    assert torch.allclose(pairs, -reference["pairs"], atol=1e-6)
    with torch.no_grad():
        kernel = block.f.attention.location_kernel(pairs, reference["edges"])
        assert torch.allclose(kernel, reference["kernel"], atol=1e-6)
        values = reference["values"]
        assert torch.allclose(block.f.norm(values), reference["attention_norm"], atol=1e-12)
        assert torch.allclose(block.g(values), reference["feed_forward_branch"], atol=1e-12)
        assert torch.allclose(model.head(model.head_norm(values)), reference["head"], atol=1e-12)


def test_import_command_path_writes_a_loadable_revzoo_file(register_plugin, tmp_path):
    register_plugin(revzoo_lie, name="lie")
    out = revzoo.import_checkpoint(
        "lie-transformer-pytorch", FIXTURES / "upstream_reversible.pt", tmp_path / "lie.safetensors", heads=2
    )
    model = revzoo.load(out)
    assert revzoo.get_form(model) == "reversible"
    feats, coords = torch.randn(1, 4, 8), torch.randn(1, 4, 3)
    edges = torch.randn(1, 4, 4, 2)
    assert model(feats, coords, edges, return_pooled=True, generator=torch.Generator().manual_seed(0)).shape == (1, 3)


def test_hyperparameters_saved_beside_the_state_dict_are_used(register_plugin, tmp_path):
    register_plugin(revzoo_lie, name="lie")
    state = _load("upstream_sequential.pt")
    torch.save({"state_dict": state, "hparams": {"heads": 2, "dim": 8, "liftsamples": 3}}, tmp_path / "wrapped.pt")
    model = revzoo.load(
        revzoo.import_checkpoint("lie-transformer-pytorch", tmp_path / "wrapped.pt", tmp_path / "w.safetensors")
    )
    assert (model.revzoo_config["heads"], model.revzoo_config["liftsamples"]) == (2, 3)
    with pytest.raises(revzoo.CheckpointError, match="disagree"):
        read_lie_transformer_pytorch({"state_dict": state, "hparams": {"heads": 2, "dim": 16}})


def test_refuses_what_it_cannot_map():
    state = dict(_load("upstream_sequential.pt"))
    with pytest.raises(revzoo.CheckpointError, match="heads=3"):
        read_lie_transformer_pytorch(state, heads=3)
    with pytest.raises(revzoo.CheckpointError, match="unknown option"):
        read_lie_transformer_pytorch(state, depth=2)
    state["net.blocks.0.0.attn.extra.weight"] = torch.zeros(1)
    state["decoder.weight"] = torch.zeros(1)
    with pytest.raises(revzoo.CheckpointError, match=r"cannot map 2 key\(s\), first: decoder.weight, net.blocks.0.0.attn"):
        read_lie_transformer_pytorch(state, heads=2)
    mixed = {**_load("upstream_sequential.pt"), **_load("upstream_reversible.pt")}
    with pytest.raises(revzoo.CheckpointError, match="one form"):
        read_lie_transformer_pytorch(mixed, heads=2)
    twin = dict(_load("upstream_sequential.pt"))
    twin["net.blocks.0.0.net.1.to_q.weight"] = twin["net.blocks.0.0.net.1.to_q.weight"] + 1
    with pytest.raises(revzoo.CheckpointError, match="differ"):
        read_lie_transformer_pytorch(twin, heads=2)
    with pytest.raises(revzoo.CheckpointError, match="state dict"):
        read_lie_transformer_pytorch([1, 2, 3])
