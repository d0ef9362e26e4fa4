"""The command line as Unix tools behave: a closed pipe, plugin warnings, progress bars, a missing extra."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

import revzoo
from helpers import FakeEntryPoint, install_entry_points, plugin_of, tiny_spec
from revzoo.bench._progress import Progress
from revzoo.cli import main

WITHOUT_TIMM = "import sys; sys.modules['timm'] = None; from revzoo.cli import main; sys.exit(main(sys.argv[1:]))"


def revzoo_cli(*args: str, code: str = "from revzoo.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
               **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REVZOO_")} | env
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ, timeout=300)


def test_a_closed_pipe_ends_quietly() -> None:
    reader, writer = os.pipe()
    os.close(reader)  # `revzoo list | true`: the reader is gone before revzoo writes
    code = "from revzoo.cli import main; import sys; sys.exit(main(['list']))"
    result = subprocess.run([sys.executable, "-c", code], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if not k.startswith("REVZOO_")})
    os.close(writer)
    assert result.stderr == "" and result.returncode == 141  # 128 + SIGPIPE, what a shell shows for `yes | true`


def _list_with_stdout(stdout) -> subprocess.CompletedProcess:
    code = "from revzoo.cli import main; import sys; sys.exit(main(['list']))"
    return subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if not k.startswith("REVZOO_")},
                          preexec_fn=(lambda: os.close(1)) if stdout is None else None)


def test_a_closed_stdout_discards_the_output_and_succeeds() -> None:
    result = _list_with_stdout(None)  # `revzoo list >&-`: Python starts with sys.stdout None
    assert result.stderr == "" and result.returncode == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_one_line_and_exit_2() -> None:
    with open("/dev/full", "w") as full:
        result = _list_with_stdout(full)
    assert result.stderr == "revzoo: error: No space left on device\n" and result.returncode == 2


def test_a_failing_plugin_is_one_revzoo_line(monkeypatch, capsys) -> None:
    def broken():
        raise ImportError("No module named 'missing_dependency'")

    monkeypatch.delenv("REVZOO_LOAD_PLUGINS")
    points = [FakeEntryPoint("broken", broken), FakeEntryPoint("good", lambda: plugin_of(tiny_spec()))]
    install_entry_points(monkeypatch, *points)
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out == "tiny\ntiny-rev\n"
    assert err == "revzoo: warning: plugin 'broken' failed to load: ImportError: No module named 'missing_dependency'\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bench_draws_progress_bars_only_on_a_terminal(monkeypatch) -> None:
    assert Progress("x", 3).bar is None  # lines instead (test_bench)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert not Progress("x", 3).bar.disable


def test_without_timm_the_zoo_works_and_a_vit_says_which_extra_to_install(tmp_path) -> None:
    listed = revzoo_cli("list", code=WITHOUT_TIMM)
    assert listed.returncode == 0 and listed.stderr == ""
    assert {"dalle", "dalle-rev", "lie-transformer", "vit-small"} <= set(listed.stdout.split())
    code = WITHOUT_TIMM.replace("from revzoo.cli import main; sys.exit(main(sys.argv[1:]))",
                                "import revzoo; revzoo.create(sys.argv[1])")
    for name in ("dalle", "vit-small"):
        created = revzoo_cli(name, code=f"{code}; print('created')")
        if name == "dalle":
            assert created.returncode == 0 and created.stdout == "created\n", created.stderr
        else:
            assert created.stderr.strip().endswith(
                "revzoo.errors.PluginError: model 'vit-small' needs timm: pip install 'revzoo[vit]'"), created.stderr


def test_an_error_naming_a_path_with_a_newline_is_still_one_line(tmp_path, capsys) -> None:
    missing = tmp_path / "a\nb.safetensors"
    assert main(["convert", str(missing), str(tmp_path / "o.safetensors"), "--to", "sequential"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a\\nb.safetensors: no such file" in err


def test_revzoos_own_warnings_stay_lines_under_pythonwarnings_error(tmp_path, builtin_plugins) -> None:
    model = revzoo.create("vit-tiny", img_size=32, patch_size=8, depth=2)
    revzoo.save(model, tmp_path / "s.safetensors")
    revzoo.save_training_state(tmp_path / "s.training.safetensors", model, torch.optim.Adam(model.parameters()))
    result = revzoo_cli("convert", str(tmp_path / "s.safetensors"), str(tmp_path / "p.safetensors"),
                        "--to", "reversible", "--preserve", PYTHONWARNINGS="error")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("revzoo: warning: ") and result.stderr.count("\n") == 1
    assert (tmp_path / "p.safetensors").is_file()
