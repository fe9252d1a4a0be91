"""Index stores: a local directory or an HTTP(S) base URL holding ``<name>.caibx`` files.

Spec: ``spec/http.md``. After desync ``localindex.go`` (``validIndexName``: no empty name,
``.``, ``..`` or path separators) and ``indexStoreFromLocation`` in
``cmd/desync/store.go``: an index location is split into its store (the directory or the
URL up to the last ``/``) and the index name (the last element).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from desync_ref.errors import IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.stores import IndexStore, IndexWriteStore
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, is_http_location


def valid_index_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


class LocalIndexStore:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        if create and not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise StoreError(f"cannot create index store {self.path}: {exc.strerror}") from None
        if not self.path.is_dir():
            raise StoreError(f"index store {self.path} is not a directory")

    def __str__(self) -> str:
        return str(self.path)

    def _file(self, name: str) -> Path:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.path / name

    def get_index_bytes(self, name: str) -> bytes:
        path = self._file(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise IndexMissing(f"index {path} not found") from None
        except OSError as exc:
            raise StoreError(f"cannot read index {path}: {exc.strerror}") from None

    def has_index(self, name: str) -> bool:
        return self._file(name).is_file()

    def get_index(self, name: str) -> Index:
        data = self.get_index_bytes(name)
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self._file(name)}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        self.store_index_bytes(name, encode_index(index))

    def store_index_bytes(self, name: str, data: bytes) -> None:
        """Written under a temp name and renamed: a reader never sees a partial index."""
        target = self._file(name)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write index {target}: {exc.strerror}") from None

    def close(self) -> None:
        pass


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS) -> IndexStore:
    """An index store from its location (a directory or an http(s) base URL)."""
    if is_http_location(location):
        from desync_ref.stores.http import HTTPIndexStore  # urllib3 only when it is used

        return HTTPIndexStore(location, options.for_location(location))
    return LocalIndexStore(location)


def index_store_for(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                    create: bool = False) -> tuple[IndexWriteStore, str]:
    """The store holding the index at ``location`` and the index's name in it."""
    if is_http_location(location):
        from desync_ref.stores.http import HTTPIndexStore, split_index_url

        base, name = split_index_url(location)
        return HTTPIndexStore(base, options.for_location(base.rstrip("/"))), name
    path = Path(location)
    return LocalIndexStore(path.parent, create=create), path.name
