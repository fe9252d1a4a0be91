"""The store backends by location scheme: one line per backend, its module imported on use.

Spec: ``spec/store.md`` ("Adding a store backend"). After desync ``cmd/desync/store.go``
(``storeFromLocation``, ``indexStoreFromLocation``), which picks a store type by the URL
scheme and treats anything else as a local path.

A line names the location prefixes it answers to, the module that implements it and what
it can do. The module is imported only when a location of its scheme is opened, so a
command that never meets an ``http://`` location never imports urllib3. A scheme whose
line does not say ``indexes`` (ssh, OCI) is refused as an index location, as desync
refuses it ("Index storage is not supported by ..." in ``indexStoreFromLocation``).

A backend module provides, with :class:`StoreOptions` carrying the per-location options
(the module picks its own with ``options.for_location(location)``):

* ``open_chunk_store(location, options, *, create) -> Store`` (a WriteStore when the line
  says ``writes``, a PruneStore when it says ``prunes``);
* with ``indexes``: ``open_index_store(location, options, *, create) -> IndexStore`` and
  ``open_index_location(location, options, *, create) -> (IndexStore, name)``, the store
  holding the index at ``location`` and its name there.
"""

from __future__ import annotations

import importlib
from typing import Final, NamedTuple, Protocol, cast

from desync_ref.errors import StoreError
from desync_ref.stores import IndexStore, Store
from desync_ref.stores.options import StoreOptions, redact


class BackendModule(Protocol):
    def open_chunk_store(self, location: str, options: StoreOptions, *, create: bool = False) -> Store: ...

    def open_index_store(self, location: str, options: StoreOptions, *, create: bool = False) -> IndexStore: ...

    def open_index_location(self, location: str, options: StoreOptions, *,
                            create: bool = False) -> tuple[IndexStore, str]: ...


class Backend(NamedTuple):  # a NamedTuple: a frozen dataclass costs ~1.5 ms at every start
    name: str
    schemes: tuple[str, ...]  # lowercase location prefixes, "s3+" or "http://"
    module: str
    reads: bool = True
    writes: bool = False
    prunes: bool = False  # lists and prunes its chunks: its chunk store is a PruneStore
    indexes: bool = False  # also holds index files
    remote: bool = True  # reads wait on the network: commands default to more threads

    def load(self) -> BackendModule:
        return cast(BackendModule, importlib.import_module(self.module))


# Plain paths: whatever no scheme below claims.
LOCAL: Final = Backend("local", (), "desync_ref.stores.local", writes=True, prunes=True, indexes=True,
                       remote=False)

BACKENDS: Final[tuple[Backend, ...]] = (
    Backend("http", ("http://", "https://"), "desync_ref.stores.http", writes=True, indexes=True),
    Backend("s3", ("s3+",), "desync_ref.stores.s3", writes=True, prunes=True, indexes=True),
    Backend("gcs", ("gs://",), "desync_ref.stores.gcs", writes=True, prunes=True, indexes=True),
    Backend("sftp", ("sftp://",), "desync_ref.stores.sftp", writes=True, prunes=True, indexes=True),
    Backend("ssh", ("ssh://",), "desync_ref.stores.ssh"),
    Backend("oci", ("oci+",), "desync_ref.stores.oci", writes=True, prunes=True),
)


def backend_for(location: str) -> Backend:
    """The backend a location's scheme selects (schemes compare case-insensitively, as Go's
    ``url.Parse`` lowercases them); anything else is a local path."""
    lowered = location.lower()
    for backend in BACKENDS:
        if lowered.startswith(backend.schemes):
            return backend
    return LOCAL


def index_backend_for(location: str) -> Backend:
    """The backend holding index files at ``location``; StoreError for a scheme whose stores
    hold no indexes."""
    backend = backend_for(location)
    if not backend.indexes:
        raise StoreError(f"index storage is not supported by {backend.name} stores: '{redact(location)}'")
    return backend
