"""Files say where they come from: the providing package and version, the schema; old schemas migrate; dtype on load."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import revzoo
from helpers import pairs, plugin_of
from revzoo.cli import main
from revzoo.registry import _plugins


class TabMlp(revzoo.ZooModel):
    """Schema 1 calls the output layer `head`; schema 2 calls it `out` (a key rename)."""

    def __init__(self, *, form: str, dim: int, head_name: str = "head") -> None:
        super().__init__()
        self.stack = revzoo.ReversibleSequence(pairs(2, dim, dropout=0.0), form=form)
        setattr(self, head_name, nn.Linear(dim, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)


def _rename_head(tensors, config):
    return {key.replace("head.", "out.", 1): value for key, value in tensors.items()}, {**config, "renamed": True}


def _spec(schema: int = 1, **fields) -> revzoo.ArchSpec:
    def build(*, form: str, dim: int, renamed: bool = False) -> TabMlp:
        return TabMlp(form=form, dim=dim, head_name="out" if schema >= 2 else "head")

    defaults = {"dim": 4, "renamed": False} if schema >= 2 else {"dim": 4}
    return revzoo.ArchSpec(name="tabmlp", builder=build, description="a tabular MLP", defaults=defaults,
                           schema=schema, **fields)


@pytest.fixture
def saved_v1(register_plugin, tmp_path, monkeypatch):
    """A tabmlp file written by schema 1 of the plugin, as the package `revzoo-tabmlp` 1.0 would write it."""
    name = register_plugin(plugin_of(_spec()), name="tabmlp")
    monkeypatch.setitem(_plugins._state.plugins, name,
                        _plugins.PluginRecord(name, distribution="revzoo-tabmlp", version="1.0"))
    model = revzoo.create("tabmlp", form="reversible")
    path = revzoo.save(model, tmp_path / "tab.safetensors")
    revzoo.unregister_plugin(name)
    return path, model.state_dict()


def test_metadata_records_the_distribution_its_version_and_the_schema(saved_v1) -> None:
    path, _ = saved_v1
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
    assert metadata["revzoo.distribution"] == "revzoo-tabmlp" and metadata["revzoo.plugin_version"] == "1.0"
    assert metadata["revzoo.schema"] == "1"
    meta = revzoo.read_metadata(path)
    assert (meta["distribution"], meta["plugin_version"], meta["schema"]) == ("revzoo-tabmlp", "1.0", 1)


def test_builtin_plugins_are_recorded_as_revzoo(builtin_plugins) -> None:
    origin = revzoo.registry.provenance("lie-transformer-rev")
    assert origin == {"plugin": "lie", "distribution": "revzoo", "plugin_version": origin["plugin_version"],
                      "schema": 1}
    assert origin["plugin_version"]


def test_a_missing_plugin_names_the_package_to_install(saved_v1, capsys) -> None:
    path, _ = saved_v1
    with pytest.raises(revzoo.UnknownModelError, match=r"comes from the package 'revzoo-tabmlp' \(version 1.0 wrote "
                                                       r"this file\).*pip install revzoo-tabmlp"):
        revzoo.load(path)
    assert main(["convert", str(path), str(path.with_name("out.safetensors")), "--to", "sequential"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install revzoo-tabmlp" in err


def test_a_plugin_migrates_its_older_files(saved_v1, register_plugin) -> None:
    path, state = saved_v1
    register_plugin(plugin_of(_spec(schema=2, migrations={1: _rename_head})), name="tabmlp2")
    model = revzoo.load(path)
    assert model.revzoo_config == {"dim": 4, "renamed": True}
    assert torch.equal(model.out.weight, state["head.weight"]) and torch.equal(model.out.bias, state["head.bias"])
    converted = revzoo.convert(path, path.with_name("v2.safetensors"), "sequential")
    assert revzoo.read_metadata(converted)["schema"] == 2
    assert torch.equal(revzoo.load(converted).out.weight, state["head.weight"])


def test_a_missing_migration_or_a_newer_file_is_one_clear_error(saved_v1, register_plugin, tmp_path) -> None:
    path, _ = saved_v1
    name = register_plugin(plugin_of(_spec(schema=2)), name="no-migration")
    with pytest.raises(revzoo.CheckpointError, match=r"has schema 1 of 'tabmlp' and the installed plugin \(schema 2\) "
                                                     r"registers no migration from it"):
        revzoo.load(path)
    newer = revzoo.save(revzoo.create("tabmlp"), tmp_path / "newer.safetensors")
    revzoo.unregister_plugin(name)
    register_plugin(plugin_of(_spec()), name="old-plugin")
    with pytest.raises(revzoo.CheckpointError, match=r"with schema 2 of 'tabmlp'; the installed plugin reads up to "
                                                     r"schema 1: upgrade the package"):
        revzoo.load(newer)


def test_schema_and_migrations_are_validated() -> None:
    with pytest.raises(revzoo.PluginError, match="schema must be a positive int"):
        _spec(schema=0)
    with pytest.raises(revzoo.PluginError, match=r"migrations maps an older schema version \(1 to 1\)"):
        _spec(schema=2, migrations={2: _rename_head})


def test_load_keeps_the_files_dtype_by_default(register_plugin, tmp_path, capsys) -> None:
    register_plugin(plugin_of(_spec()), name="tabmlp")
    path = revzoo.save(revzoo.create("tabmlp").to(torch.bfloat16), tmp_path / "bf16.safetensors")
    assert {p.dtype for p in revzoo.load(path).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in revzoo.load(path, dtype=None).parameters()} == {torch.float32}
    assert {p.dtype for p in revzoo.load(path, dtype="float16").parameters()} == {torch.float16}
    with pytest.raises(revzoo.ConfigError, match=r"dtype 'int8' is not one to load a model in; use 'auto'"):
        revzoo.load(path, dtype="int8")
    out = tmp_path / "f32.safetensors"
    assert main(["convert", str(path), str(out), "--to", "sequential", "--dtype", "float32"]) == 0
    assert "cast to float32" in capsys.readouterr().out
    with safe_open(out, "pt") as file:
        assert {file.get_slice(k).get_dtype() for k in file.keys()} == {"F32"}
    loaded = revzoo.load(out)
    assert revzoo.get_form(loaded) == "sequential" and {p.dtype for p in loaded.parameters()} == {torch.float32}
