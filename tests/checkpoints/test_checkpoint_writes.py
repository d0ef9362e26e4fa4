"""Checkpoint writes: file modes, signals, stale temporaries, racing writers, OS errors, resharding in place."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

import revzoo
import revzoo.checkpoints._stream
import revzoo.checkpoints._write
from helpers import ROOT, fail_with, plugin_of, tiny_spec
from revzoo.cli import main


@pytest.fixture(autouse=True)
def plugin(register_plugin):
    register_plugin(plugin_of(tiny_spec()), name="writes-test")


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    return revzoo.save(revzoo.create("tiny-rev", dim=8, depth=4), tmp_path / "m.safetensors")


@pytest.fixture
def umask():
    """Sets the umask for one test: `umask(0o022)`."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def leftovers(directory, *expected) -> list[str]:
    return sorted(set(path.name for path in directory.iterdir()) - set(expected))


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_follow_the_umask(tmp_path, saved, umask, mask) -> None:
    umask(mask)
    written = [revzoo.save(revzoo.create("tiny"), tmp_path / "s.safetensors"),
               revzoo.convert(saved, tmp_path / "c.safetensors", "sequential"),
               revzoo.convert(saved, tmp_path / "c.safetensors.index.json", "sequential", max_shard_size=200)]
    index = json.loads(written[-1].read_text())
    written += [tmp_path / name for name in set(index["weight_map"].values())]
    assert len(written) > 4
    for path in written:
        assert mode(path) == 0o666 & ~mask, path.name


def test_an_overwritten_file_keeps_its_mode(tmp_path, saved, umask, capsys) -> None:
    umask(0o077)
    target = tmp_path / "c.safetensors"
    target.write_bytes(b"old")
    target.chmod(0o644)
    assert run_cli(capsys, "convert", str(saved), str(target), "--to", "sequential", "--overwrite")[0] == 0
    assert mode(target) == 0o644 and revzoo.read_metadata(target)["form"] == "sequential"
    target.chmod(0o640)
    revzoo.save(revzoo.create("tiny"), target)
    assert mode(target) == 0o640


def slow_copy(monkeypatch, action) -> None:
    """Runs `action()` once, in the middle of the first tensor copy of a convert."""
    real = revzoo.checkpoints._stream._copy_range

    def copy(*args):
        action()
        monkeypatch.setattr(revzoo.checkpoints._stream, "_copy_range", real)
        return real(*args)

    monkeypatch.setattr(revzoo.checkpoints._stream, "_copy_range", copy)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_mid_convert_leaves_nothing(tmp_path, saved, monkeypatch, signum) -> None:
    assert signal.getsignal(signum) == signal.SIG_DFL
    slow_copy(monkeypatch, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(SystemExit) as exit_info:
        revzoo.convert(saved, tmp_path / "c.safetensors.index.json", "sequential", max_shard_size=200)
    assert exit_info.value.code == 128 + signum
    assert leftovers(tmp_path, saved.name) == []
    assert signal.getsignal(signum) == signal.SIG_DFL  # the handler lives only while writing


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_mid_convert_in_a_process_exits_128_plus_it_and_cleans_up(tmp_path, saved, signum) -> None:
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
import revzoo, revzoo.checkpoints._stream as stream
from helpers import plugin_of, tiny_spec
from revzoo.cli import main
revzoo.register_plugin(plugin_of(tiny_spec()), name="writes-test")
real = stream._copy_range
def copy(*args):
    os.kill(os.getpid(), {int(signum)})
    return real(*args)
stream._copy_range = copy
sys.exit(main(["convert", {str(saved)!r}, {str(tmp_path / "c.safetensors")!r}, "--to", "sequential"]))
"""
    env = {**os.environ, "REVZOO_LOAD_PLUGINS": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(tmp_path, saved.name) == []


def dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def temporary(directory, target: str, pid: int, host: str | None = None):
    """A temporary as a writer in namespace `host` (this one's by default) names it, holding 100 bytes."""
    host = host or revzoo.checkpoints._write._namespace()
    path = directory / f".{target}.revzoo-{host}-{pid}-0123abcd.tmp"
    path.write_bytes(b"x" * 100)
    return path


@contextlib.contextmanager
def a_writer_holds(directory):
    """What a live writer holds while its temporaries exist: a shared lock on their directory."""
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(handle, fcntl.LOCK_SH)
    try:
        yield
    finally:
        os.close(handle)


def test_stale_temporaries_of_dead_writers_are_removed_on_the_next_write(tmp_path, saved) -> None:
    dead = dead_pid()
    temporary(tmp_path, "c.safetensors", dead)  # this namespace's, its process gone: stale
    live = temporary(tmp_path, "c.safetensors", os.getppid())  # a running process: maybe still writing
    foreign = temporary(tmp_path, "c.safetensors", dead, host="0badcafe")  # its PID means nothing here
    other = temporary(tmp_path, "d.safetensors", dead)  # another target's: not this write's business
    with a_writer_holds(tmp_path):  # a writer is live somewhere: only what the PID shows stale goes
        revzoo.convert(saved, tmp_path / "c.safetensors", "sequential")
    assert leftovers(tmp_path, saved.name) == sorted(["c.safetensors", live.name, foreign.name, other.name])
    legacy = tmp_path / f".c.safetensors.revzoo-{dead}-0123abcd.tmp"  # as revzoo named them before namespaces
    legacy.write_bytes(b"x")
    revzoo.convert(saved, tmp_path / "c.safetensors", "sequential", overwrite=True)  # no writer live: all go
    assert leftovers(tmp_path, saved.name) == sorted(["c.safetensors", other.name])


def test_a_live_writer_in_another_pid_namespace_keeps_its_temporary(tmp_path, saved) -> None:
    """A container sharing the volume: its writer's PID is dead here (or another process's), its temporary live."""
    target, ready, go = tmp_path / "c.safetensors", tmp_path / "ready", tmp_path / "go"
    script = f"""
import sys, time
from pathlib import Path
import revzoo, revzoo.checkpoints._write as write
write._identity = lambda: ("0badcafe", {dead_pid()})  # another namespace's, where that PID lives
def slow(tmp):
    tmp.write_bytes(b"the other container's")
    Path({str(ready)!r}).touch()
    while not Path({str(go)!r}).exists():
        time.sleep(0.01)
    if not tmp.exists():
        sys.exit("its temporary was deleted")
revzoo.atomic_write({str(target)!r}, slow)
"""
    writer = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(6000):
            if ready.exists() or writer.poll() is not None:
                break
            time.sleep(0.01)
        assert ready.exists(), writer.stderr.read()
        revzoo.convert(saved, target, "sequential", overwrite=True)
        go.touch()
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    finally:
        writer.kill()
    assert target.read_bytes() == b"the other container's"
    assert leftovers(tmp_path, saved.name, target.name, ready.name, go.name) == []


def test_a_racing_writer_cannot_be_overwritten_without_overwrite(tmp_path, saved, capsys, monkeypatch) -> None:
    target = tmp_path / "c.safetensors"
    slow_copy(monkeypatch, lambda: target.write_bytes(b"the other writer's"))
    code, err = run_cli(capsys, "convert", str(saved), str(target), "--to", "sequential")
    assert code == 2 and err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"the other writer's"
    assert leftovers(tmp_path, saved.name, target.name) == []


def test_read_only_directory_is_one_line(tmp_path, saved, capsys, monkeypatch) -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(revzoo.checkpoints._write.os, "open", fail_with(denied))
    code, err = run_cli(capsys, "convert", str(saved), str(tmp_path / "c.safetensors"), "--to", "sequential")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "c.safetensors: cannot write it: Permission denied (no permission to write there)" in err
    monkeypatch.undo()
    assert leftovers(tmp_path, saved.name) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_really_read_only_directory_is_one_line(tmp_path, saved, capsys) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    code, err = run_cli(capsys, "convert", str(saved), str(out / "c.safetensors"), "--to", "sequential")
    assert code == 2 and "Permission denied" in err and list(out.iterdir()) == []


@pytest.mark.parametrize("shard", [None, "0.2KB"])
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, saved, capsys, monkeypatch, shard) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    calls = []

    def copy(*args):
        calls.append(1)
        if len(calls) == 3:
            raise full
        return real(*args)

    real = revzoo.checkpoints._stream._copy_range
    monkeypatch.setattr(revzoo.checkpoints._stream, "_copy_range", copy)
    extra = ["--max-shard-size", shard] if shard else []
    code, err = run_cli(capsys, "convert", str(saved), str(tmp_path / "c.safetensors"), "--to", "sequential", *extra)
    assert code == 2 and err.count("\n") == 1
    assert "cannot write it: No space left on device (the disk is full)" in err
    assert leftovers(tmp_path, saved.name) == []


def test_full_disk_while_saving_or_exporting(tmp_path, saved, monkeypatch) -> None:
    from safetensors import SafetensorError

    monkeypatch.setattr(revzoo.checkpoints._io, "save_file",
                        fail_with(SafetensorError("Error while serializing: IoError(No space left on device)")))
    with pytest.raises(revzoo.CheckpointError, match=r"s.safetensors: cannot write it: .*No space left on device"):
        revzoo.save(revzoo.create("tiny"), tmp_path / "s.safetensors")
    assert leftovers(tmp_path, saved.name) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("limit", [1000, 20_000])
def test_export_of_a_pt_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, limit) -> None:
    """A write cut short (here by RLIMIT_FSIZE, as a full disk cuts it) was torch's 'unexpected pos' traceback."""
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
import revzoo, torch
from hostile import DALLE
from revzoo.cli import main
torch.manual_seed(0)
src = revzoo.save(revzoo.create("dalle-rev", **DALLE), {str(tmp_path / "d.safetensors")!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as one on a full disk does
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.exit(main(["export", "dalle-pytorch", str(src), {str(tmp_path / "out.pt")!r}]))
"""
    env = {**os.environ, "REVZOO_LOAD_PLUGINS": "dalle"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{tmp_path / 'out.pt'}: cannot write it: File too large" in result.stderr
    assert leftovers(tmp_path, "d.safetensors") == []


def test_output_that_is_a_directory(tmp_path, saved, capsys) -> None:
    (tmp_path / "d.safetensors").mkdir()
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(capsys, "convert", str(saved), str(tmp_path / "d.safetensors"), "--to", "sequential", *extra)
        assert code == 2 and err.count("\n") == 1 and "d.safetensors: is a directory" in err
    with pytest.raises(revzoo.CheckpointError, match="is a directory"):
        revzoo.save(revzoo.create("tiny"), tmp_path / "d.safetensors")
    assert leftovers(tmp_path, saved.name, "d.safetensors") == [] and list((tmp_path / "d.safetensors").iterdir()) == []


def test_resharding_an_index_onto_itself_removes_the_old_shards(tmp_path, saved) -> None:
    index = revzoo.convert(saved, tmp_path / "s.safetensors.index.json", "sequential", max_shard_size=200)
    old = set(json.loads(index.read_text())["weight_map"].values())
    assert len(old) > 2
    revzoo.convert(index, index, "reversible", overwrite=True, max_shard_size=100_000)
    new = set(json.loads(index.read_text())["weight_map"].values())
    assert len(new) == 1
    assert leftovers(tmp_path, saved.name) == sorted({index.name, *new})
    torch.testing.assert_close(revzoo.load(index).state_dict(), revzoo.load(saved).state_dict())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_write_over_a_device_or_fifo_is_refused_and_the_node_kept(tmp_path, saved, capsys) -> None:
    pipe = tmp_path / "pipe.safetensors"
    os.mkfifo(pipe)  # what `revzoo export ... /dev/null --overwrite` did to /dev/null as root: replaced by a file
    with pytest.raises(revzoo.CheckpointError, match="is not a regular file"):
        revzoo.atomic_write(pipe, lambda tmp: tmp.write_bytes(b"x"))
    assert main(["convert", str(saved), str(pipe), "--to", "sequential", "--overwrite"]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)


@pytest.mark.parametrize("length", [230, 255])
def test_a_name_as_long_as_the_file_system_takes_is_written(tmp_path, length) -> None:
    target = tmp_path / ("m" * (length - len(".bin")) + ".bin")  # valid names the temporary's suffix made too long
    revzoo.atomic_write(target, lambda tmp: tmp.write_bytes(b"data"))
    assert target.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_convert_to_a_name_as_long_as_the_file_system_takes(tmp_path, saved, capsys) -> None:
    target = tmp_path / ("m" * (255 - len(".safetensors")) + ".safetensors")  # its training state's name: too long
    assert main(["convert", str(saved), str(target), "--to", "sequential"]) == 0, capsys.readouterr().err
    assert revzoo.read_metadata(target)["form"] == "sequential"
    assert len(revzoo.checkpoints.training_state_beside(target).name) <= 255
