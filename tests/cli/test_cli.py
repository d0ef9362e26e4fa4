"""The command line: output of list/info/plugins, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import plugin_of, tiny_spec
from revzoo.cli import main


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    register_plugin(plugin_of(tiny_spec(card="model_cards/tiny.md")), name="tiny-plugin")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys) -> None:
    assert run(capsys, "list") == (0, "tiny\ntiny-rev\n", "")
    assert run(capsys, "list", "*-rev") == (0, "tiny-rev\n", "")


def test_info_shows_the_whole_spec(capsys) -> None:
    code, out, _ = run(capsys, "info", "tiny-rev")
    assert code == 0
    for expected in ("name", "a tiny test stack", "form of this name  reversible", '"dim": 4',
                     "stream layout", "a single tensor", "model_cards/tiny.md", "plugin", "tiny-plugin",
                     "registered at run time", "file schema"):
        assert expected in out


def test_plugins_is_json(capsys) -> None:
    code, out, _ = run(capsys, "plugins")
    (record,) = [r for r in json.loads(out) if r["name"] == "tiny-plugin"]
    assert code == 0 and record["status"] == "ok" and record["hooks"] == ["register_architectures"]
    assert record["models"] == ["tiny"]


def test_unknown_name_is_one_line_exit_2(capsys) -> None:
    code, out, err = run(capsys, "info", "tinny-rev")
    assert code == 2 and out == ""
    assert err == "revzoo: error: unknown model 'tinny-rev'; did you mean 'tiny-rev' or 'tiny'? (see: revzoo list)\n"


def test_python_dash_m_and_bad_arguments() -> None:
    result = subprocess.run([sys.executable, "-m", "revzoo", "convert", "a", "b", "--to", "backwards"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'backwards'" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_options_reach_the_reader(register_plugin, tmp_path, capsys) -> None:
    import torch

    import revzoo

    seen = {}

    def read(obj, **options):
        seen.update(options)
        raise revzoo.CheckpointError("stop here")

    class Formats:
        @revzoo.hookimpl
        def register_formats(self, register):
            register(revzoo.CheckpointFormat(name="opts", description="records options", read=read))

    register_plugin(Formats(), name="opts")
    torch.save({"w": torch.zeros(1)}, tmp_path / "in.pt")
    code, _, err = run(capsys, "import", "opts", str(tmp_path / "in.pt"), str(tmp_path / "out.safetensors"),
                       "--option", "heads=4", "--option", "name=abc", "--model", "m")
    assert code == 2 and err == "revzoo: error: stop here\n"
    assert seen == {"heads": 4, "name": "abc", "model": "m"}


def test_bench_options_reach_the_benchmark(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "usage: revzoo bench" in capsys.readouterr().out


def test_a_bad_option_shows_the_commands_own_usage(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["list", "--bogus"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == "usage: revzoo list [-h] [--json] [pattern]\nrevzoo list: error: unrecognized arguments: --bogus\n"


def test_create_writes_a_fresh_seeded_checkpoint(tmp_path, capsys) -> None:
    import revzoo

    first, second, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    code, out, err = run(capsys, "create", "tiny-rev", str(first), "--option", "dim=6", "--option", "depth=3")
    assert (code, err) == (0, "")
    assert out == f"wrote {first}: a fresh 'tiny-rev' model (form reversible, seed 0), 252 parameters\n"
    assert run(capsys, "create", "tiny-rev", str(second), "--option", "dim=6", "--option", "depth=3")[0] == 0
    # seed 0 unless told: the same tensors (not the same bytes: safetensors writes the metadata in hash order)
    assert all(p.equal(q) for p, q in zip(revzoo.load(first).parameters(), revzoo.load(second).parameters()))
    assert run(capsys, "create", "tiny", str(other), "--seed", "1", "--option", "dim=6", "--option", "depth=3")[0] == 0
    model, again = revzoo.load(first), revzoo.load(other)
    assert (model.form, again.form, revzoo.read_metadata(first)["config"]) == ("reversible", "sequential",
                                                                            {"dim": 6, "depth": 3})
    assert not all(p.equal(q) for p, q in zip(model.parameters(), again.parameters()))


def test_create_refuses_an_existing_output_and_bad_input_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "create", "tiny", str(out))
    assert code == 2 and err == f"revzoo: error: {out}: already exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == b"precious"
    for args, message in ((["tinny"], "unknown model 'tinny'; did you mean"),
                          (["tiny", "--option", "width=3"], "'tiny' got unknown option(s) width; valid: depth, dim"),
                          (["tiny", "--seed", str(2**64)], "--seed must be an integer from 0 to 2**64 - 1")):
        code, _, err = run(capsys, "create", args[0], str(tmp_path / "n.safetensors"), *args[1:])
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "n.safetensors").exists()
    state = tmp_path / "m.training.safetensors"  # the training state of the model in m.safetensors
    state.write_bytes(b"old optimizer")
    out.unlink()
    code, _, err = run(capsys, "create", "tiny", str(out))
    assert code == 2 and err == f"revzoo: error: {state}: already exists; pass --overwrite to replace it\n"
    code, printed, _ = run(capsys, "create", "tiny", str(out), "--overwrite")
    assert code == 0 and f"removed {state} (the training state of the model replaced)" in printed
    assert out.is_file() and not state.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left


def test_an_option_nested_too_deep_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["create", "tiny", str(tmp_path / "m.safetensors"), "--option", "dim=" + "[" * 100_000])
    assert stop.value.code == 2 and "dim: the value is JSON nested too deep to read" in capsys.readouterr().err
