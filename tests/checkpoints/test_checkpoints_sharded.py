"""Hugging Face-style sharded checkpoints: save/load, convert, import, bad indexes, atomic writes."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import revzoo
import revzoo.checkpoints._checkpoint
from helpers import interrupt_copy, run_cli, tokens
from revzoo.checkpoints._io import progress_bar
from revzoo.checkpoints._shards import parse_size

pytestmark = pytest.mark.usefixtures("tied_plugin")  # the tied test architecture and the "fake" format
SHARD = 200  # bytes: the tied model's tensors spread over several shards


@pytest.fixture
def sharded(tmp_path, saved):
    model, _ = saved
    return model, revzoo.save(model, tmp_path / "s.safetensors", max_shard_size=SHARD)


def index_of(path) -> dict:
    return json.loads(path.read_text())


def stored(path) -> dict[str, torch.Tensor]:
    return revzoo.read_foreign(path)


def outputs_equal(loaded, model) -> None:
    torch.testing.assert_close(loaded(tokens()), model(tokens()), rtol=0, atol=0)


def test_sharded_round_trip(tmp_path, sharded) -> None:
    model, path = sharded
    index = index_of(path)
    shards = sorted(set(index["weight_map"].values()))
    assert path.name == "s.safetensors.index.json" and len(shards) >= 3
    assert shards == [f"s-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert index["metadata"]["revzoo.architecture"] == "tied"
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in stored(path).values())
    for shard in shards:  # each shard describes itself too
        with safe_open(str(tmp_path / shard), "pt") as handle:
            assert handle.metadata()["revzoo.architecture"] == "tied"
    assert "out.weight" not in index["weight_map"] and "embed.weight" in index["weight_map"]  # tied: stored once
    assert revzoo.read_metadata(path)["config"] == {"vocab": 11, "dim": 6}
    loaded = revzoo.load(path)
    assert loaded.out.weight is loaded.embed.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    outputs_equal(loaded, model)
    assert revzoo.get_form(revzoo.load(path, form="sequential")) == "sequential"


def test_shard_layout_follows_the_output_name(tmp_path, saved) -> None:
    model, _ = saved
    assert revzoo.save(model, tmp_path / "one.safetensors", max_shard_size="1MB").name == "one.safetensors"
    indexed = revzoo.save(model, tmp_path / "idx.safetensors.index.json")
    assert set(index_of(indexed)["weight_map"].values()) == {"idx-00001-of-00001.safetensors"}
    outputs_equal(revzoo.load(indexed), model)


def test_convert_sharded_files(tmp_path, saved, sharded, capsys) -> None:
    model, single = saved
    _, path = sharded
    seq = tmp_path / "seq.safetensors.index.json"
    code, out, _ = run_cli(capsys, "convert", str(path), str(seq), "--to", "sequential")
    assert code == 0 and "different functions" in out
    assert index_of(seq)["weight_map"].values() != index_of(path)["weight_map"].values()  # renamed shards
    assert [len(g) for g in _groups(seq)] == [len(g) for g in _groups(path)]  # the input's split is kept
    for shard in set(index_of(seq)["weight_map"].values()):
        with safe_open(str(tmp_path / shard), "pt") as handle:
            assert handle.metadata()["revzoo.form"] == "sequential"
    merged = revzoo.convert(seq, tmp_path / "merged.safetensors", "reversible")
    resharded = tmp_path / "re.safetensors"
    code, out, _ = run_cli(capsys, "convert", str(single), str(resharded), "--to", "sequential",
                                "--max-shard-size", "0.2KB")
    assert code == 0 and "re.safetensors.index.json" in out
    for result in (seq, merged, resharded.with_name("re.safetensors.index.json")):
        assert stored(result).keys() == stored(single).keys()
        assert all(torch.equal(stored(result)[k], v) for k, v in stored(single).items())
    outputs_equal(revzoo.load(merged), model)


def _groups(index_path) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for name, shard in index_of(index_path)["weight_map"].items():
        groups.setdefault(shard, []).append(name)
    return list(groups.values())


def test_import_a_foreign_sharded_checkpoint(tmp_path, saved) -> None:
    model, _ = saved
    state = {"old." + k: v.clone() for k, v in model.state_dict().items() if k != "out.weight"}
    names = list(state)
    weight_map = {}
    for i, part in enumerate((names[:3], names[3:]), start=1):
        shard = f"model-{i:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, tmp_path / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    out = revzoo.import_checkpoint("fake", index, tmp_path / "imported.safetensors")
    outputs_equal(revzoo.load(out), model)


def _drop_shard(path):
    shard = index_of(path)["weight_map"]["embed.weight"]
    (path.parent / shard).unlink()
    return rf"1 shard files missing \[{shard}\]"


def _ghost_tensor(path):
    index = index_of(path)
    shard = index["weight_map"]["ghost"] = index["weight_map"]["embed.weight"]
    path.write_text(json.dumps(index))
    return rf"index names tensors its shards lack: 1 absent \[ghost \({shard}\)\]"


def _corrupt_json(path):
    path.write_text('{"weight_map": {"embed.weight": ')
    return r"not a readable shard index \(not JSON"


def _escaping_shard(path):
    index = index_of(path)
    index["weight_map"]["embed.weight"] = "../elsewhere.safetensors"
    path.write_text(json.dumps(index))
    return "shards must sit beside the index"


def _pickle_shard(path):
    index = index_of(path)
    index["weight_map"]["embed.weight"] = "pytorch_model-00001-of-00002.bin"
    path.write_text(json.dumps(index))
    return r"only \.safetensors shards are read"


@pytest.mark.parametrize("damage", [_drop_shard, _ghost_tensor, _corrupt_json, _escaping_shard, _pickle_shard])
def test_bad_indexes_give_one_line_and_exit_2(tmp_path, sharded, capsys, damage) -> None:
    _, path = sharded
    message = damage(path)
    out = tmp_path / "o.safetensors"
    code, _, err = run_cli(capsys, "convert", str(path), str(out), "--to", "sequential")
    assert code == 2 and err.startswith("revzoo: error:") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not out.exists()
    with pytest.raises(revzoo.CheckpointError, match=message):
        revzoo.load(path)


def test_bad_shard_size(tmp_path, saved, capsys) -> None:
    _, path = saved
    code, _, err = run_cli(capsys, "convert", str(path), str(tmp_path / "o.safetensors"), "--to", "sequential",
                                "--max-shard-size", "lots")
    assert code == 2 and "invalid shard size 'lots'; expected a positive number of bytes or a size in KB" in err
    assert (parse_size("500MB"), parse_size(" 1.5gb "), parse_size(1024)) == (500 * 10**6, 15 * 10**8, 1024)
    for refused in ("2GiB", "10", "0MB", "-5MB", "nanMB", "infGB", True, 0):
        with pytest.raises(revzoo.CheckpointError, match="invalid shard size"):
            parse_size(refused)


def test_failed_sharded_writes_leave_no_output(tmp_path, saved, monkeypatch) -> None:
    model, path = saved
    interrupt_copy(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        revzoo.convert(path, tmp_path / "o.safetensors", "sequential", max_shard_size=SHARD)
    calls = []

    def fail_on_third_shard(tensors, tmp, metadata):
        calls.append(tmp)
        if len(calls) == 3:
            raise OSError("disk full")
        Path(tmp).write_bytes(b"shard")

    monkeypatch.setattr(revzoo.checkpoints._io, "save_file", fail_on_third_shard)
    with pytest.raises(revzoo.CheckpointError, match=r"w-00003-of-0000\d.safetensors: cannot write it: disk full"):
        revzoo.save(model, tmp_path / "w.safetensors", max_shard_size=SHARD)
    assert len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_progress_bar_only_on_a_terminal(monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_bar(10, "x").disable
    monkeypatch.setattr("sys.stderr", Terminal())
    with progress_bar(10, "x") as bar:
        assert not bar.disable


def test_an_index_written_over_another_removes_only_its_own_old_shards(tmp_path, saved) -> None:
    model, single = saved
    index = revzoo.save(model, tmp_path / "m.safetensors", max_shard_size=SHARD)
    old_shards = set(index_of(index)["weight_map"].values())
    assert len(old_shards) > 1
    other = tmp_path / "other.safetensors"
    other.write_bytes(single.read_bytes())
    damaged = index_of(index)  # an index that also names an unrelated model, as an edited or foreign one may
    damaged["weight_map"]["extra"] = other.name
    index.write_text(json.dumps(damaged))
    revzoo.save(model, index, max_shard_size="1GB")  # one shard now: the old ones go, the unrelated model stays
    assert other.read_bytes() == single.read_bytes()
    assert set(index_of(index)["weight_map"].values()) == {"m-00001-of-00001.safetensors"}
    assert not [name for name in old_shards - {"m-00001-of-00001.safetensors"} if (tmp_path / name).exists()]
