"""SFTP chunk and index stores: ``sftp://[user@]host[:port]/path`` over SSH, with paramiko.

Spec: ``spec/sftp.md``. After desync ``sftp.go`` (``newSFTPStoreBase``,
``SFTPStore``, ``StoreObject``, ``Prune``) and ``sftpindex.go`` (``SFTPIndexStore``); the
location is parsed as in ``cmd/desync/store.go`` (``storeFromLocation``,
``indexStoreFromLocation``). The backend module of ``sftp://`` in ``stores/registry.py``.

The location, the two transports (``CASYNC_SSH_PATH``, or paramiko's own SSH client) and
the pool of connections are in ``stores/sftp_connection.py``; this module is what a store
does over one connection.

A store keeps up to ``options.n`` connections (desync's pool of ``-n``), made when first
needed. A connection that breaks (EOF, timeout, the ssh program gone) is dropped and the
operation retried on a new one, ``error_retry`` attempts in all with a linear back-off; an
error the SFTP server answers (permission denied, ...) is not retried. Chunks are written to
a temp name in their prefix directory, then moved over the final name with
``posix-rename@openssh.com`` (desync ``StoreObject``): a reader never sees part of a chunk.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import paramiko

from desync_ref.errors import ChunkMissing, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import (
    MAX_STORED_CHUNK_SIZE,
    TMP_CHUNK_PREFIX,
    Digest,
    chunk_file_name,
    is_temp_chunk_name,
    parse_chunk_path,
)
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.stores import Chunk
from desync_ref.stores.index_stores import MAX_INDEX_BYTES, valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions
from desync_ref.stores.sftp_connection import ConnectionPool, SFTPLocation, parse_location
from desync_ref.stores.storage_form import storage_form

_T = TypeVar("_T")



# --- remote file operations (one connection each) ---------------------------------------------

def _read_file(sftp: paramiko.SFTPClient, path: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit``."""
    with sftp.open(path, "rb") as remote:
        size = remote.stat().st_size or 0
        if size > limit:
            return None
        remote.prefetch(size)  # the reads go out together, not one round trip each
        data: bytes = remote.read()
    return data if len(data) <= limit else None


def _write_file(sftp: paramiko.SFTPClient, path: str, temp: str, data: bytes) -> None:
    """``data`` under the temp name ``temp`` (same directory), then renamed over ``path``;
    the directory is made when missing (desync ``StoreObject``)."""
    try:
        remote = sftp.open(temp, "wxb")
    except FileNotFoundError:
        with contextlib.suppress(OSError):  # another writer may make it at the same moment
            sftp.mkdir(posixpath.dirname(path))
        remote = sftp.open(temp, "wxb")
    try:
        with remote:
            remote.set_pipelined(True)
            remote.write(data)
        sftp.posix_rename(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # over a broken connection this fails too
            sftp.remove(temp)
        raise


def _make_dirs(sftp: paramiko.SFTPClient, path: str) -> None:
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                sftp.mkdir(current)


class SFTPBase:
    """A store directory on an SFTP server, with its connection pool."""

    def __init__(self, location: str, options: StoreOptions, *, create: bool, size: int,
                 loc: SFTPLocation | None = None) -> None:
        self.loc = loc or parse_location(location)
        self.location = self.loc.shown
        self.root = self.loc.path
        self.options = options
        self._size = size
        self._pool = ConnectionPool(self.loc, options, size)
        self._check_root(create)

    def __str__(self) -> str:
        return self.location

    def _check_root(self, create: bool) -> None:
        """desync stats the path once connected: it must exist (and the login work)."""

        def check(sftp: paramiko.SFTPClient) -> None:
            if create:
                _make_dirs(sftp, self.root)
            try:
                mode = sftp.stat(self.root).st_mode or 0
            except FileNotFoundError:
                raise StoreError(f"{self.location}: {self.root} does not exist on {self.loc.address}") from None
            if not stat.S_ISDIR(mode):
                raise StoreError(f"{self.location}: {self.root} is not a directory")

        self._pool.run("open", check)

    # A make over several processes pickles the store into each worker: the connections
    # stay behind and the worker makes its own.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool = ConnectionPool(self.loc, self.options, self._size)

    def run(self, what: str, op: Callable[[paramiko.SFTPClient], _T]) -> _T:
        return self._pool.run(what, op)

    def temp_name(self, directory: str, prefix: str, suffix: str = "") -> str:
        # No mkstemp over SFTP: a random name, created exclusively.
        return f"{directory}/{prefix}{secrets.token_hex(8)}{suffix}"

    def close(self) -> None:
        self._pool.close()


class SFTPStore(SFTPBase):
    """An SFTP chunk store (desync ``SFTPStore``): a PruneStore."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False) -> None:
        super().__init__(location, options, create=create, size=options.n)
        self.form = storage_form(options, location)

    def path(self, chunk_id: bytes) -> str:
        return self.root + chunk_file_name(chunk_id, self.form.extension)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        path = self.path(chunk_id)
        try:
            blob = self.run(f"read chunk {chunk_id.hex()}", lambda sftp: _read_file(sftp, path, MAX_STORED_CHUNK_SIZE))
        except FileNotFoundError:
            raise ChunkMissing(chunk_id.hex(), str(self)) from None
        if blob is None:
            raise StoreError(f"{self.location}: chunk file {path} is larger than {MAX_STORED_CHUNK_SIZE} bytes")
        return self.form.from_storage(chunk_id, blob, None if self.options.skip_verify else digest,
                                      where=self.location)

    def has_chunk(self, chunk_id: bytes) -> bool:
        path = self.path(chunk_id)

        def look(sftp: paramiko.SFTPClient) -> bool:
            try:
                info = sftp.stat(path)
            except FileNotFoundError:
                return False
            return stat.S_ISREG(info.st_mode or 0) and (info.st_size or 0) > 0

        return self.run(f"stat chunk {chunk_id.hex()}", look)

    def store_chunk(self, chunk: Chunk) -> None:
        path = self.path(chunk.id)
        data = self.form.to_storage(chunk)
        temp = self.temp_name(posixpath.dirname(path), TMP_CHUNK_PREFIX)
        self.run(f"write chunk {chunk.id.hex()}", lambda sftp: _write_file(sftp, path, temp, data))

    def remove_chunk(self, chunk_id: bytes) -> None:
        path = self.path(chunk_id)

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)
            # An emptied prefix directory goes too, as in the local store.
            with contextlib.suppress(OSError):
                sftp.rmdir(posixpath.dirname(path))

        self.run(f"remove chunk {chunk_id.hex()}", remove)

    def _listing(self) -> list[tuple[str, bytes | None]]:
        """(path, chunk id) for every chunk file of this store's form and (path, None) for
        every temp file, listed over one connection that is given back before anything is
        deleted (desync #375: a prune holding the only connection waited for it forever)."""

        def walk(sftp: paramiko.SFTPClient) -> list[tuple[str, bytes | None]]:
            found: list[tuple[str, bytes | None]] = []
            for sub in sorted(sftp.listdir_attr(self.root), key=lambda a: a.filename):
                if len(sub.filename) != 4 or not stat.S_ISDIR(sub.st_mode or 0):
                    continue
                for entry in sorted(sftp.listdir_attr(self.root + sub.filename), key=lambda a: a.filename):
                    if not stat.S_ISREG(entry.st_mode or 0):
                        continue
                    path = f"{self.root}{sub.filename}/{entry.filename}"
                    chunk_id = parse_chunk_path(f"{sub.filename}/{entry.filename}", self.form.extension)
                    if isinstance(chunk_id, bytes):
                        found.append((path, chunk_id))
                    elif is_temp_chunk_name(entry.filename):
                        found.append((path, None))
            return found

        return self.run("list chunks", walk)

    def chunk_ids(self) -> Iterator[bytes]:
        for _, chunk_id in self._listing():
            if chunk_id is not None:
                yield chunk_id

    def prune(self, keep: set[bytes]) -> int:
        """Delete chunk files not in ``keep`` and leftover temp files, over up to ``n``
        connections; emptied prefix directories go too. Returns the chunks removed."""
        doomed = [(path, chunk_id) for path, chunk_id in self._listing() if chunk_id not in keep]

        def remove(path: str) -> None:
            def op(sftp: paramiko.SFTPClient) -> None:
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(path)

            self.run(f"remove {path}", op)

        if doomed:
            with ThreadPoolExecutor(max_workers=max(1, min(self.options.n, len(doomed)))) as workers:
                list(workers.map(remove, [path for path, _ in doomed]))
        for directory in sorted({posixpath.dirname(path) for path, _ in doomed}):
            def rmdir(sftp: paramiko.SFTPClient, directory: str = directory) -> None:
                with contextlib.suppress(OSError):  # not empty: it keeps chunks
                    sftp.rmdir(directory)

            self.run(f"remove {directory}", rmdir)
        return sum(1 for _, chunk_id in doomed if chunk_id is not None)


class SFTPIndexStore(SFTPBase):
    """An SFTP index store (desync ``SFTPIndexStore``): ``<path>/<name>``, one connection."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False,
                 loc: SFTPLocation | None = None) -> None:
        super().__init__(location, options, create=create, size=1, loc=loc)

    def _path(self, name: str) -> str:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.root + name

    def get_index(self, name: str) -> Index:
        path = self._path(name)
        try:
            data = self.run(f"read index {name}", lambda sftp: _read_file(sftp, path, MAX_INDEX_BYTES))
        except FileNotFoundError:
            raise IndexMissing(f"index {self.location.rstrip('/')}/{name} not found") from None
        if data is None:
            raise StoreError(f"{self.location}: index {name} is larger than {MAX_INDEX_BYTES} bytes")
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self.location.rstrip('/')}/{name}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        path = self._path(name)
        data = encode_index(index)
        temp = self.temp_name(self.root.rstrip("/"), f".{name}.", ".tmp")
        self.run(f"write index {name}", lambda sftp: _write_file(sftp, path, temp, data))


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> SFTPStore:
    """``create`` makes the store's directory (and its parents) when missing."""
    return SFTPStore(location, options.for_location(location), create=create)


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> SFTPIndexStore:
    return SFTPIndexStore(location, options.for_location(location), create=create)


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[SFTPIndexStore, str]:
    """``sftp://h/p/x.caibx`` → the store at ``/p/`` and ``x.caibx`` (desync
    ``indexStoreFromLocation``: ``path.Dir`` and ``path.Base`` of the URL's path)."""
    loc = parse_location(location)
    full = loc.path.rstrip("/")
    name = posixpath.basename(full)
    if not name:
        raise StoreError(f"index URL {loc.shown} names no index")
    directory = posixpath.dirname(full)
    base = loc.child(directory)
    return SFTPIndexStore(base.shown, options.for_location(base.shown.rstrip("/")), create=create, loc=base), name
