"""Reading indexes and writing outputs safely: temp file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from desync_ref.errors import DesyncRefError, DigestMismatch, InvalidFormat
from desync_ref.formats.index import Index, parse_index, write_index

STDIO = "-"


def read_index(location: str, expected_digest: str | None = None) -> Index:
    """An index from a file or ``-`` (stdin); ``expected_digest`` set means the user chose one."""
    try:
        data = sys.stdin.buffer.read() if location == STDIO else Path(location).read_bytes()
    except OSError as exc:
        raise DesyncRefError(f"cannot read index {location}: {exc.strerror}") from None
    try:
        index = parse_index(data)
    except InvalidFormat as exc:
        raise InvalidFormat(f"{location}: {exc}") from None
    if expected_digest is not None and index.digest != expected_digest:
        raise DigestMismatch(
            f"{location} uses digest {index.digest} but {expected_digest} was requested"
        )
    return index


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file that appears under ``target`` only if the block completes."""
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out
        os.chmod(tmp_name, mode & ~_umask())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_index_file(index: Index, location: str) -> None:
    if location == STDIO:
        write_index(index, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    with atomic_output(location) as out:
        write_index(index, out)
