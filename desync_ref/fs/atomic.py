"""Outputs that appear under their final name only when complete: a temp file beside the
target, renamed on success and removed on any failure (a signal too: SIGINT and SIGTERM
unwind as exceptions, spec/cli.md "Signals"). A target that is not a regular file (a FIFO,
a pipe named as ``/dev/stdout``, a character device) is written straight into instead:
a rename would replace it rather than feed it (:func:`stream_output`).

Spec: spec/store.md (temp files); the rule for every command's output is in README.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file that appears under ``target`` only if the block completes."""
    target = Path(target)
    fd, tmp_name = make_temp(target.parent or ".", f".{target.name}.", ".tmp")
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out
        os.chmod(tmp_name, mode & ~current_umask())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def make_temp(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new file in ``directory`` named ``prefix``, random letters and ``suffix``, made with
    ``O_EXCL`` and mode 0600 (what ``tempfile.mkstemp`` does: no file or symlink of that
    name is reused); its descriptor (read and write) and path. Here rather than ``tempfile``,
    which brings ``shutil``, ``random`` and the compression modules to every command's
    start-up (issue 14)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(directory))


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def is_stream(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is written in place: it exists and is something other than a
    regular file or directory (symlinks followed: ``/dev/stdout`` is a link to the process's
    descriptor), or it is a name under ``/dev`` or ``/proc`` whatever it points at
    (``/dev/stdout`` redirected to a file: a rename there would replace the link itself)."""
    if os.path.abspath(target).startswith(("/dev/", "/proc/")):
        return True
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def stream_output(target: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """:func:`atomic_output` for files; a FIFO, pipe or device is opened and written as it
    is (what a reader there has already taken cannot be taken back on failure)."""
    if is_stream(target):
        with open(target, "wb") as out:
            yield out
        return
    with atomic_output(target, mode) as out:
        yield out
