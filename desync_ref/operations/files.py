"""Reading and writing indexes: files, stdin/stdout, or an index store URL.

Spec: spec/index.md; index URLs in spec/http.md.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

from desync_ref.errors import DesyncRefError, DigestMismatch, InvalidFormat, StoreError
from desync_ref.formats.index import Index, parse_index, write_index
from desync_ref.fs.atomic import atomic_output
from desync_ref.stores import IndexWriteStore
from desync_ref.stores.index_stores import index_store_for, is_index_url, refuse_encryption
from desync_ref.stores.options import StoreOptions

STDIO = "-"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector held off while an index's entries (or a plan made from
    them) are created: tens of thousands of new objects, none in a cycle, whose allocation
    triggers collection after collection (on a 64k-entry index about as much time as the
    parsing itself). It is turned back on afterwards, unless it was off already."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def read_index(location: str, expected_digest: str | None = None,
               options: StoreOptions | None = None) -> Index:
    """An index from a file, ``-`` (stdin) or an http(s) URL (an index store's object);
    ``expected_digest`` set means the user chose one."""
    if options is not None:
        refuse_encryption(location, options)
    if is_index_url(location):
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
            with collector_paused():
                index = parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{location}: {exc}") from None
    if expected_digest is not None and index.digest != expected_digest:
        raise DigestMismatch(
            f"{location} uses digest {index.digest} but {expected_digest} was requested"
        )
    return index


def write_index_file(index: Index, location: str, options: StoreOptions | None = None) -> None:
    """To a file, ``-`` (stdout), or an index store URL (``http(s)://host/path/name``)."""
    if options is not None:
        refuse_encryption(location, options)
    if is_index_url(location):
        store, name = index_store_for(location, options or StoreOptions())
        try:
            if not isinstance(store, IndexWriteStore):
                raise StoreError(f"index store {store} does not take indexes")
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
