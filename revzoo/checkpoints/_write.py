"""Writing checkpoint files atomically: temporaries beside the target, modes kept, signals and races handled.

Every file is first written to a temporary named `.NAME.revzoo-PID-XXXXXXXX.tmp` beside
its target (NAME shortened, with a digest, when the target's name is too long to carry it),
then put in place. A new file follows the umask (as `open` would make it); a
replaced file keeps its mode. Without `overwrite` the temporary is hard-linked to the
target, which fails if the target appeared meanwhile, so two writers racing for the same
new path cannot both succeed. SIGTERM or SIGHUP during a write removes the temporaries, as
Ctrl-C does; a temporary left by a killed process (SIGKILL) is removed by the next write of the
same target once its process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["TEMPORARY_PATTERN", "atomic_write", "atomic_write_all", "remove_stale_temporaries"]

TEMPORARY_PATTERN = ".NAME.revzoo-PID-XXXXXXXX.tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.revzoo-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_HINTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
          errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
          errno.EROFS: "the file system is read-only", errno.EISDIR: "it is a directory",
          errno.EFBIG: "beyond the largest file this process may write: ulimit -f, or the file system's limit"}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


_NAME_MAX = 255  # the longest file name most file systems take (ext4, xfs, btrfs, APFS, NTFS)
_TEMPORARY_EXTRA = len(".revzoo-4194304-xxxxxxxx.tmp") + 1  # beyond the name, with the largest Linux PID


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


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Removes the temporaries of `path` left by processes that no longer run; returns them."""
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = _TEMPORARY.match(candidate.name)
        if match and match["name"] == _temporary_name(path.name) and int(match["pid"]) != os.getpid() and not _process_alive(
                int(match["pid"])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _new_temporary(path: Path) -> tuple[Path, int]:
    """Creates an empty temporary beside `path`; returns it and the mode a new file gets under the umask."""
    tmp = path.with_name(f".{_temporary_name(path.name)}.revzoo-{os.getpid()}-{secrets.token_hex(4)}.tmp")
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
        with _terminate_cleanly():
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
