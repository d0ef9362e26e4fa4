"""revzoo checkpoints: save/load, conversion between forms, foreign formats, and every bad input."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import revzoo
import revzoo.checkpoints._stream
from helpers import ROOT, TiedModel, interrupt_copy, run_cli, tokens

pytestmark = pytest.mark.usefixtures("tied_plugin")


def test_save_load_round_trip(saved) -> None:
    model, path = saved
    meta = revzoo.read_metadata(path)
    assert meta["architecture"] == "tied" and meta["form"] == "reversible"
    assert meta["config"] == {"vocab": 11, "dim": 6} and meta["version"] == revzoo.__version__
    loaded = revzoo.load(path)
    assert revzoo.get_form(loaded) == "reversible"
    torch.testing.assert_close(loaded(tokens()), model(tokens()), rtol=0, atol=0)
    assert revzoo.get_form(revzoo.load(path, form="sequential")) == "sequential"
    assert revzoo.load(path, dtype=torch.float64).embed.weight.dtype == torch.float64


def test_a_float64_file_loads_bitwise(tmp_path) -> None:
    """The model is cast to the file's dtype before the copy: built in float32 first, float64 values were rounded."""
    torch.manual_seed(0)
    model = revzoo.create("tied-rev").double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-9)  # not representable in float32
    loaded = revzoo.load(revzoo.save(model, tmp_path / "m64.safetensors"))
    for (name, want), got in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert got.dtype == want.dtype and torch.equal(got, want), name


def test_tied_tensors_are_stored_once_and_retied(saved) -> None:
    _, path = saved
    with safe_open(str(path), "pt") as handle:
        keys = set(handle.keys())
        assert json.loads(handle.metadata()["revzoo.aliases"]) == {"out.weight": "embed.weight"}
    assert "out.weight" not in keys and "embed.weight" in keys
    loaded = revzoo.load(path)
    assert loaded.out.weight is loaded.embed.weight


def test_bare_state_dict_loads_with_an_architecture(tmp_path, saved) -> None:
    model, _ = saved
    state = {k: v for k, v in model.state_dict().items() if k != "out.weight"}
    save_file(state, tmp_path / "bare.safetensors")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    for name in ("bare.safetensors", "bare.pt"):
        loaded = revzoo.load(tmp_path / name, architecture="tied-rev")
        torch.testing.assert_close(loaded(tokens()), model(tokens()), rtol=0, atol=0)
    with pytest.raises(revzoo.CheckpointError, match="no revzoo metadata"):
        revzoo.load(tmp_path / "bare.safetensors")


def test_convert_changes_only_the_recorded_form(tmp_path, saved, capsys) -> None:
    model, path = saved
    seq, back = tmp_path / "seq.safetensors", tmp_path / "back.safetensors"
    code, out, _ = run_cli(capsys, "convert", str(path), str(seq), "--to", "sequential", "--probe")
    assert code == 0 and "different functions" in out and "probe: max |reversible - sequential|" in out
    assert revzoo.read_metadata(seq)["form"] == "sequential"
    revzoo.convert(seq, back, "reversible")
    with safe_open(str(path), "pt") as a, safe_open(str(back), "pt") as b:
        assert a.keys() == b.keys()
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key))
    torch.testing.assert_close(revzoo.load(back)(tokens()), model(tokens()), rtol=0, atol=0)
    probe = float(out.rsplit("=", 1)[1])
    assert probe > 0  # the forms are different functions of the same weights


def test_convert_to_the_recorded_form_says_nothing_changed(tmp_path, saved, capsys) -> None:
    _, path = saved  # recorded reversible
    code, out, _ = run_cli(capsys, "convert", str(path), str(tmp_path / "same.safetensors"), "--to", "reversible")
    assert code == 0 and "already recorded: the same function" in out and "different functions" not in out


def test_failed_conversion_leaves_no_output(tmp_path, saved, monkeypatch) -> None:
    _, path = saved
    before = path.read_bytes()
    interrupt_copy(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        revzoo.convert(path, tmp_path / "out.safetensors", "sequential")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert path.read_bytes() == before


def test_output_over_input_needs_overwrite(saved, capsys) -> None:
    _, path = saved
    code, _, err = run_cli(capsys, "convert", str(path), str(path), "--to", "sequential")
    assert code == 2 and "output is the input file; pass --overwrite" in err
    assert run_cli(capsys, "convert", str(path), str(path), "--to", "sequential", "--overwrite")[0] == 0
    assert revzoo.read_metadata(path)["form"] == "sequential"


def test_import_and_export_through_a_format(tmp_path, saved, capsys) -> None:
    model, path = saved
    foreign = tmp_path / "foreign.pt"
    torch.save({"old." + k: v for k, v in model.state_dict().items()}, foreign)
    code, out, _ = run_cli(capsys, "import", "fake", str(foreign), str(tmp_path / "imported.safetensors"))
    assert code == 0, out
    imported = revzoo.load(tmp_path / "imported.safetensors")
    torch.testing.assert_close(imported(tokens()), model(tokens()), rtol=0, atol=0)
    assert run_cli(capsys, "export", "fake", str(path), str(tmp_path / "back.safetensors"))[0] == 0
    assert revzoo.read_foreign(tmp_path / "back.safetensors").keys() == {"old." + k for k in model.state_dict()}


def _truncated(path, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(path.read_bytes()[:-7])
    return bad


def _not_json(path, tmp_path):
    bad = tmp_path / "notjson.safetensors"
    bad.write_bytes(struct.pack("<Q", 8) + b"{{{{{{{{" + b"\0" * 16)
    return bad


def _rewrite_metadata(path, tmp_path, **changes):
    with safe_open(str(path), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = {**handle.metadata(), **changes}
    bad = tmp_path / "changed.safetensors"
    save_file(tensors, bad, metadata)
    return bad


def _tensors(path, tmp_path, edit):
    with safe_open(str(path), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    edit(tensors)
    bad = tmp_path / "edited.safetensors"
    save_file(tensors, bad, metadata)
    return bad


def _deep_index(tmp_path):
    index = tmp_path / "deep.safetensors.index.json"
    index.write_text("[" * 100_000 + "]" * 100_000)
    return index


@pytest.mark.parametrize(
    "make_bad,message",
    [
        (lambda p, t: t / "missing.safetensors", "no such file"),
        (_truncated, "not a readable safetensors file"),
        (_not_json, "not a readable safetensors file"),
        (lambda p, t: _rewrite_metadata(p, t, **{"revzoo.architecture": "nope"}), "unknown model 'nope'"),
        (lambda p, t: _rewrite_metadata(p, t, **{"revzoo.layout_version": "99"}), "upgrade revzoo"),
        (lambda p, t: _tensors(p, t, lambda d: d.pop("embed.weight")), r"1 missing \[embed.weight \(11, 6\)\]"),
        (lambda p, t: _tensors(p, t, lambda d: d.update(extra=torch.zeros(2))), r"1 unexpected \[extra \(2,\)\]"),
        (lambda p, t: _tensors(p, t, lambda d: d.update({"embed.weight": torch.zeros(3, 6)})),
         r"wrong shape \[embed.weight: file \(3, 6\) vs model \(11, 6\)\]"),
        (lambda p, t: _tensors(p, t, lambda d: d.update(step=torch.zeros((), dtype=torch.float32))),
         "dtype the model cannot hold"),
        (lambda p, t: _rewrite_metadata(p, t, **{"revzoo.config": "[" * 100_000 + "]" * 100_000}),
         "corrupt revzoo metadata"),  # was a RecursionError traceback
        (lambda p, t: _deep_index(t), "not a readable shard index"),
        (lambda p, t: _rewrite_metadata(p, t, **{"revzoo.coupling": "[]"}), "coupling must be a JSON object"),  # ignored
    ],
)
def test_bad_files_give_one_line_and_exit_2(tmp_path, saved, capsys, make_bad, message) -> None:
    _, path = saved
    bad = make_bad(path, tmp_path)
    for args in (["convert", str(bad), str(tmp_path / "o.safetensors"), "--to", "sequential"],):
        code, _, err = run_cli(capsys, *args)
        assert code == 2
        assert err.startswith("revzoo: error:") and err.count("\n") == 1
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises((revzoo.RevzooError, KeyError), match=message):
        revzoo.load(bad)


def test_many_missing_tensors_are_counted(tmp_path, saved) -> None:
    _, path = saved
    bad = _tensors(path, tmp_path, lambda d: [d.pop(k) for k in list(d) if k.startswith("stack.")])
    with pytest.raises(revzoo.CheckpointError, match=r"8 missing \[.*, \.\.\. \(5 more\)\]"):
        revzoo.load(bad)


def test_unsafe_or_unknown_files_are_refused(tmp_path) -> None:
    pickled = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "payload": EvilPayload()}, pickled)
    with pytest.raises(revzoo.CheckpointError, match="never unpickles code"):
        revzoo.import_checkpoint("fake", pickled, tmp_path / "o.safetensors")
    other = tmp_path / "weights.npz"
    other.write_bytes(b"PK")
    with pytest.raises(revzoo.CheckpointError, match="unknown file type '.npz'"):
        revzoo.import_checkpoint("fake", other, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


class EvilPayload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unknown_format_and_existing_output(tmp_path, saved, capsys) -> None:
    _, path = saved
    code, _, err = run_cli(capsys, "import", "faek", str(path), str(tmp_path / "x.safetensors"))
    assert code == 2 and "unknown checkpoint format 'faek'; did you mean 'fake'?" in err
    code, _, err = run_cli(capsys, "convert", str(path), str(path.parent / "m.safetensors"), "--to", "sequential")
    assert code == 2
    (tmp_path / "exists.safetensors").write_bytes(b"keep me")
    code, _, err = run_cli(capsys, "convert", str(path), str(tmp_path / "exists.safetensors"), "--to", "sequential")
    assert code == 2 and "already exists; pass --overwrite" in err
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep me"


def test_saving_a_model_not_built_by_create(tmp_path) -> None:
    with pytest.raises(revzoo.CheckpointError, match="was not built by revzoo.create"):
        revzoo.save(TiedModel(form="reversible", vocab=3, dim=2), tmp_path / "x.safetensors")


def test_a_model_directory_with_a_too_deep_config_is_a_checkpoint_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(revzoo.CheckpointError, match="not JSON"):  # was a RecursionError
        revzoo.load(tmp_path)


def test_files_at_paths_that_are_not_utf8_load_convert_and_save(tmp_path, saved) -> None:
    """safetensors takes only UTF-8 names: a valid file at b"m\\xff.safetensors" was called corrupt."""
    model, path = saved
    named = Path(os.fsdecode(os.fsencode(tmp_path) + b"/m\xff.safetensors"))
    os.link(path, named)
    torch.testing.assert_close(revzoo.load(named)(tokens()), model(tokens()), rtol=0, atol=0)
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/o\xfe.safetensors"))
    script = "import sys; from helpers import TiedPlugin; import revzoo; from revzoo.cli import main; " \
             "revzoo.register_plugin(TiedPlugin()); sys.exit(main(sys.argv[1:]))"
    converted = subprocess.run([sys.executable, "-c", script, "convert", named, out, "--to", "sequential"],
                               capture_output=True, timeout=120, env={**os.environ, "LC_ALL": "C.UTF-8",
                                                                       "PYTHONPATH": str(ROOT / "tests")})
    assert converted.returncode == 0 and converted.stderr == b"", converted.stderr  # a UTF-8 terminal prints it too
    assert converted.stdout.startswith(b"wrote " + os.fsencode(out)) and revzoo.load(out).form == "sequential"
    revzoo.save(model, out)  # written under that name, its training-state name derived from it
    assert revzoo.load(out).form == "reversible"
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/d\xfd"))
    folder.mkdir()
    revzoo.save(model, folder / "m.safetensors")  # a UTF-8 name in a folder that is not
    torch.testing.assert_close(revzoo.load(folder / "m.safetensors")(tokens()), model(tokens()), rtol=0, atol=0)
    assert sorted(p.name for p in folder.iterdir()) == ["m.safetensors"]


def test_an_unreadable_file_is_said_so_not_called_missing_or_corrupt(saved, capsys, monkeypatch) -> None:
    _, path = saved
    path.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files: the file system's answer for any other user
        monkeypatch.setattr(os, "access", lambda name, mode, **_: not (Path(name) == path and mode == os.R_OK))
    code, _, err = run_cli(capsys, "convert", str(path), str(path.with_name("o.safetensors")), "--to", "sequential")
    assert code == 2 and "permission denied" in err and "corrupt" not in err and "no such file" not in err
