"""Reading indexes and writing outputs safely: temp file beside the target, then rename.

Spec: spec/index.md; index URLs in spec/http.md.
"""

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
from desync_ref.stores.index_stores import index_store_for
from desync_ref.stores.options import StoreOptions, is_http_location

STDIO = "-"


def read_index(location: str, expected_digest: str | None = None,
               options: StoreOptions | None = None) -> Index:
    """An index from a file, ``-`` (stdin) or an http(s) URL (an index store's object);
    ``expected_digest`` set means the user chose one."""
    if is_http_location(location):
        store, name = index_store_for(location, options or StoreOptions())
        try:
            index = store.get_index(name)
        finally:
            store.close()
    else:
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
        os.chmod(tmp_name, mode & ~current_umask())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def write_index_file(index: Index, location: str, options: StoreOptions | None = None) -> None:
    """To a file, ``-`` (stdout), or an index store URL (``http(s)://host/path/name``)."""
    if is_http_location(location):
        store, name = index_store_for(location, options or StoreOptions())
        try:
            store.store_index(name, index)
        finally:
            store.close()
        return
    if location == STDIO:
        write_index(index, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    with atomic_output(location) as out:
        write_index(index, out)
