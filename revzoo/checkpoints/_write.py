"""Writing checkpoint files atomically: temporaries beside the target, modes kept, signals and races handled.

Every file is first written to a temporary named `.NAME.revzoo-HOST-PID-XXXXXXXX.tmp` beside
its target (NAME shortened, with a digest, when the target's name is too long to carry it;
HOST names the kernel and PID namespace the PID belongs to), then put in place. A new file
follows the umask (as `open` would make it); a replaced file keeps its mode. Without
`overwrite` the temporary is hard-linked to the target, which fails if the target appeared
meanwhile, so two writers racing for the same new path cannot both succeed. SIGTERM or
SIGHUP during a write removes the temporaries, as Ctrl-C does.

A temporary left by a killed process (SIGKILL) is removed by the next write of the same
target. A writer holds a shared lock (flock) on the target's directory while its temporaries
exist, so a cleanup that gets the exclusive lock knows no writer is live there, in any
container sharing the volume; while one is, only temporaries of this PID namespace whose
process is gone are removed (a PID from another namespace says nothing here).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["TEMPORARY_PATTERN", "atomic_write", "atomic_write_all", "remove_stale_temporaries"]

TEMPORARY_PATTERN = ".NAME.revzoo-HOST-PID-XXXXXXXX.tmp"
# HOST is absent from the temporaries of revzoo before it (whose PID may be another namespace's)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.revzoo-(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_LOCK_WAIT = 30.0  # seconds a writer waits for a cleanup's exclusive lock on the directory (it takes milliseconds)
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_HINTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
          errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
          errno.EROFS: "the file system is read-only", errno.EISDIR: "it is a directory",
          errno.EFBIG: "beyond the largest file this process may write: ulimit -f, or the file system's limit"}


@functools.cache
def _namespace() -> str:
    """Eight hex digits naming this kernel's boot and this process's PID namespace: the space its PIDs live in
    (a container sharing the volume has another, the same PID naming another process or none)."""
    parts = []
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    if not any(parts):  # no /proc (not Linux): the host's name, PIDs being the host's
        parts.append(socket.gethostname())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _identity() -> tuple[str, int]:
    """How this process names itself in its temporaries: its PID namespace and its PID there."""
    return _namespace(), os.getpid()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


_NAME_MAX = 255  # the longest file name most file systems take (ext4, xfs, btrfs, APFS, NTFS)
_TEMPORARY_EXTRA = len(".revzoo-hhhhhhhh-4194304-xxxxxxxx.tmp") + 1  # beyond the name, with the largest Linux PID


def is_utf8(name: str) -> bool:
    """Whether a name is valid UTF-8 (a file system's other bytes come to Python as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _temporary_name(name: str) -> str:
    """The NAME part of a temporary: the target's name, or for one too long to carry the suffix, its first
    characters and a digest of the whole (a target of 255 characters still gets a temporary); always UTF-8, so
    writers that take only UTF-8 names (safetensors) can write it inside a directory opened by descriptor."""
    stored = os.fsencode(name)  # the bytes the file system holds (a name need not be valid UTF-8)
    if len(stored) + _TEMPORARY_EXTRA <= _NAME_MAX and is_utf8(name):
        return name
    digest = hashlib.sha256(stored).hexdigest()[:16]
    head = stored[: _NAME_MAX - _TEMPORARY_EXTRA - len(digest) - 1].decode(errors="ignore")  # drops non-UTF-8
    return f"{head}~{digest}"


@contextmanager
def _directory_lock(directory: Path, exclusive: bool) -> Iterator[bool]:
    """Holds a flock on `directory`: shared (a writer's, waiting out a cleanup's) or exclusive (a cleanup's, only
    if free at once); yields whether it is held (False where the file system has no locks, or it is busy)."""
    try:
        import fcntl

        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (ImportError, OSError):  # no flock (Windows), or a directory this user cannot open
        yield False
        return
    try:
        held, deadline = False, time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if exclusive:
                    break
                if time.monotonic() > deadline:
                    raise CheckpointError(f"{directory}: another process holds a lock on the directory for "
                                          f"{_LOCK_WAIT:.0f} s; cannot write beside its files") from None
                time.sleep(0.01)
            except OSError:  # no flock here (some network file systems): the PID check alone
                break
        yield held
    finally:
        os.close(handle)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Removes the temporaries of `path` left by writers that no longer run; returns them.

    With the directory's exclusive lock (no writer holds it shared) all of them; otherwise
    those of this PID namespace whose process is gone.
    """
    removed = []
    namespace, own_pid = _identity()
    with _directory_lock(path.parent, exclusive=True) as no_writer_live:
        try:
            candidates = list(path.parent.iterdir())
        except OSError:
            return removed
        for candidate in candidates:
            match = _TEMPORARY.match(candidate.name)
            if not match or match["name"] != _temporary_name(path.name):
                continue
            pid = int(match["pid"])
            if no_writer_live or (match["host"] == namespace and pid != own_pid and not _process_alive(pid)):
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


def _new_temporary(path: Path) -> tuple[Path, int]:
    """Creates an empty temporary beside `path`; returns it and the mode a new file gets under the umask."""
    namespace, pid = _identity()
    tmp = path.with_name(f".{_temporary_name(path.name)}.revzoo-{namespace}-{pid}-{secrets.token_hex(4)}.tmp")
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return tmp, stat.S_IMODE(os.fstat(handle).st_mode)
    finally:
        os.close(handle)


def _place(tmp: Path, path: Path, new_mode: int, overwrite: bool) -> None:
    """Moves `tmp` to `path`: replacing it (keeping its mode) with `overwrite`, else only if `path` is still absent.

    The mode is set here, after writing, because writers may replace the temporary (safetensors does).
    """
    try:
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if overwrite else new_mode)
    except FileNotFoundError:
        os.chmod(tmp, new_mode)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise CheckpointError(
            f"{path}: already exists (another process wrote it meanwhile?); pass --overwrite to replace it"
        ) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        if path.exists():  # a file system without hard links: check, then rename
            raise CheckpointError(f"{path}: already exists; pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


_CLEANED_UP_ON = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turns SIGTERM and SIGHUP (a closed terminal or ssh session) into SystemExit(128 + signal) while writing, so
    `finally` removes the temporaries (as for Ctrl-C).

    Only for a signal that has its default action, and only in the main thread (where Python runs handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = [signum for signum in _CLEANED_UP_ON if signal.getsignal(signum) == signal.SIG_DFL]
    for signum in caught:
        signal.signal(signum, _raise_exit)
    try:
        yield
    finally:
        for signum in caught:
            signal.signal(signum, signal.SIG_DFL)


def _os_error(path: Path, err: OSError) -> CheckpointError:
    reason = err.strerror or str(err)
    hint = _HINTS.get(err.errno)
    return CheckpointError(f"{path}: cannot write it: {reason}{f' ({hint})' if hint and hint not in reason else ''}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = True) -> Path:
    """Calls `write(tmp)` on a temporary file beside `path`, then puts it in place (see the module's docstring).

    A failure or interruption leaves no file at `path` (and the previous one, if any, untouched).
    """
    return atomic_write_all({Path(path): write}, overwrite)[0]


def atomic_write_all(writes: Mapping[Path, Callable[[Path], None]], overwrite: bool = True) -> list[Path]:
    """Writes every file to a temporary beside it, and only then puts them all in place, in order.

    A failure while writing leaves none of the outputs (and any previous files untouched);
    a failure while placing them removes the outputs already placed. Put the file that
    says the set is complete (a shard index) last. OS errors (a read-only directory, a
    full disk) are raised as CheckpointError naming the target.
    """
    for path in writes:
        if not path.parent.is_dir():
            raise CheckpointError(f"{path}: directory {path.parent} does not exist")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory; name a file to write")
        if path.exists() and not path.is_file():  # renaming over it would replace a device node (/dev/null) or FIFO
            raise CheckpointError(f"{path}: is not a regular file (a device, FIFO or socket); name a file to write")
        remove_stale_temporaries(path)
    temporaries: dict[Path, tuple[Path, int]] = {}
    placed: list[Path] = []
    current = next(iter(writes))
    try:
        with _terminate_cleanly(), ExitStack() as locks:
            for directory in dict.fromkeys(path.parent for path in writes):  # held while the temporaries exist
                locks.enter_context(_directory_lock(directory, exclusive=False))
            for current, write in writes.items():
                temporaries[current] = _new_temporary(current)
                write(temporaries[current][0])
            for current, (tmp, new_mode) in temporaries.items():
                _place(tmp, current, new_mode, overwrite)
                placed.append(current)
    except BaseException as err:
        for path in placed:
            path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _os_error(current, err) from err
        raise
    finally:
        for tmp, _ in temporaries.values():
            tmp.unlink(missing_ok=True)
    return list(writes)
