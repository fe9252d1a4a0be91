"""The store backends by location scheme: one line per backend, its module imported on use.

Spec: ``spec/store.md`` ("Adding a store backend"). After desync ``cmd/desync/store.go``
(``storeFromLocation``, ``indexStoreFromLocation``), which picks a store type by the URL
scheme and treats anything else as a local path.

A line names the location prefixes it answers to, the module that implements it and what
it can do. The module is imported only when a location of its scheme is opened, so a
command that never meets an ``http://`` location never imports urllib3. A line with no
module is a scheme desync knows and desync_ref does not implement yet: opening it as a
chunk store fails with "not supported yet"; as an index location it is a plain path, as
it always was.

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
from dataclasses import dataclass
from typing import Final, Protocol, cast

from desync_ref.stores import IndexStore, Store
from desync_ref.stores.options import StoreOptions


class BackendModule(Protocol):
    def open_chunk_store(self, location: str, options: StoreOptions, *, create: bool = False) -> Store: ...

    def open_index_store(self, location: str, options: StoreOptions, *, create: bool = False) -> IndexStore: ...

    def open_index_location(self, location: str, options: StoreOptions, *,
                            create: bool = False) -> tuple[IndexStore, str]: ...


@dataclass(frozen=True)
class Backend:
    name: str
    schemes: tuple[str, ...]  # lowercase location prefixes, "s3+" or "http://"
    module: str | None  # None: a scheme desync has and desync_ref does not (yet)
    reads: bool = True
    writes: bool = False
    prunes: bool = False  # lists, prunes and verifies its chunks in place (a local directory)
    indexes: bool = False  # also holds index files
    remote: bool = True  # reads wait on the network: commands default to more threads

    def load(self) -> BackendModule:
        assert self.module is not None
        return cast(BackendModule, importlib.import_module(self.module))


# Plain paths: whatever no scheme below claims.
LOCAL: Final = Backend("local", (), "desync_ref.stores.local", writes=True, prunes=True, indexes=True,
                       remote=False)

BACKENDS: Final[tuple[Backend, ...]] = (
    Backend("http", ("http://", "https://"), "desync_ref.stores.http", writes=True, indexes=True),
    Backend("s3", ("s3+",), None),
    Backend("gcs", ("gs://",), None),
    Backend("sftp", ("sftp://",), None),
    Backend("ssh", ("ssh://",), "desync_ref.stores.ssh"),
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
    """The backend holding index files at ``location``: a scheme with an index backend, else
    a local path (also for the schemes not implemented yet, as before the registry)."""
    backend = backend_for(location)
    return backend if backend.module is not None and backend.indexes else LOCAL
