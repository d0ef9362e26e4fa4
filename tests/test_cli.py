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
