"""Turn store locations into stores, and compose ``-s``/``-c`` as desync does.

Spec: spec/store.md ("Adding a store backend") and spec/http.md ("Composition"). Each
location goes to the backend its scheme selects in ``stores/registry.py``; on top of them,
as desync ``cmd/desync/store.go`` (``MultiStoreWithCache``): ``a|b|c`` is a failover group,
several ``-s`` a router, ``-c`` a cache in front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from desync_ref.errors import InvalidParameter, StoreError
from desync_ref.formats.chunk import Digest
from desync_ref.stores import PruneStore, Store, WriteStore
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions
from desync_ref.stores.registry import LOCAL, Backend, backend_for

# The wrappers and the local store are imported where a chain needs them: opening one
# store (make's -s) does not load the router, the cache and the failover group.
if TYPE_CHECKING:
    from desync_ref.stores.local import LocalStore

__all__ = ["StoreOptions", "open_chain", "open_prune_store", "open_store", "open_writable", "open_write_store"]


def _backend(location: str) -> Backend:
    """The backend of one store (not a group): refused when the scheme is not implemented."""
    if not location:
        raise InvalidParameter("empty store location", parameter="store location")
    backend = backend_for(location)
    if "|" in location:
        raise StoreError(f"store location '{location}' is not supported yet")
    return backend


def _open_one(location: str, options: StoreOptions) -> Store:
    return _backend(location).load().open_chunk_store(location, options)


def open_store(location: str, options: StoreOptions = DEFAULT_OPTIONS) -> Store:
    """A source store: a directory, an http(s) URL, or a failover group ``a|b|c``."""
    if "|" in location:
        from desync_ref.stores.failover import FailoverGroup

        return FailoverGroup([_open_one(member, options) for member in location.split("|")])
    return _open_one(location, options)


def open_writable(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = True) -> WriteStore:
    """A store that takes chunks (a directory or an http(s) chunk server); a directory is
    created when ``create`` is set."""
    backend = _backend(location)
    store = backend.load().open_chunk_store(location, options, create=create)
    if not isinstance(store, WriteStore):
        store.close()
        raise StoreError(f"store location '{location}' does not take chunks")
    return store


def open_write_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = True) -> LocalStore:
    """A store whose chunks are files here: the one kind that lists, prunes and verifies its
    chunks in place and knows their stored sizes (tar -i, prune, verify, inspect-chunks, info -c)."""
    from desync_ref.stores.local import LocalStore

    backend = _backend(location)
    if backend is not LOCAL:
        raise StoreError(f"store location '{location}' must be a local directory here")
    store = backend.load().open_chunk_store(location, options, create=create)
    if not isinstance(store, LocalStore):
        store.close()
        raise StoreError(f"store location '{location}' must be a local directory here")
    return store


def open_prune_store(location: str, options: StoreOptions = DEFAULT_OPTIONS) -> PruneStore:
    """A store that lists and prunes its chunks (``prune``): a directory, or any backend
    whose registry line says ``prunes`` (S3, GCS, SFTP, OCI). A directory must exist."""
    backend = _backend(location)
    if backend is LOCAL:
        return open_write_store(location, options, create=False)
    if not backend.prunes:
        raise StoreError(f"store location '{location}' does not support pruning")
    store = backend.load().open_chunk_store(location, options)
    if not isinstance(store, PruneStore):
        store.close()
        raise StoreError(f"store location '{location}' does not support pruning")
    return store


def open_chain(
    locations: Sequence[str],
    cache: str | None,
    digest: Digest,
    options: StoreOptions = DEFAULT_OPTIONS,
) -> Store:
    """``-s a -s b [-c c]``: a router over the sources, behind the cache if one is given.
    ``digest`` is the cache's, for repairing it."""
    if not locations:
        raise InvalidParameter("no store given", parameter="store")
    from desync_ref.stores.cache import CachedStore
    from desync_ref.stores.router import StoreRouter

    stores = [open_store(loc, options) for loc in locations]
    store: Store = stores[0] if len(stores) == 1 else StoreRouter(stores)
    if cache:
        cache_store: WriteStore = open_writable(cache, options)
        return CachedStore(store, cache_store, digest, repair=options.cache_repair)
    return store
