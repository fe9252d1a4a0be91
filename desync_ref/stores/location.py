"""Turn a store location string into a store, and compose ``-s``/``-c`` as desync does.

Spec: spec/store.md and spec/http.md (store locations).
"""

from __future__ import annotations

from collections.abc import Sequence

from desync_ref.errors import StoreError, UsageError
from desync_ref.formats.chunk import Digest
from desync_ref.stores import Store, WriteStore
from desync_ref.stores.cache import CachedStore
from desync_ref.stores.failover import FailoverGroup
from desync_ref.stores.local import LocalStore
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, is_http_location
from desync_ref.stores.router import StoreRouter

__all__ = ["StoreOptions", "open_chain", "open_store", "open_writable", "open_write_store"]

_REMOTE_SCHEMES = ("s3+", "gs://", "sftp://", "ssh://")


def _check_local(location: str) -> None:
    if not location:
        raise UsageError("empty store location")
    if location.startswith(_REMOTE_SCHEMES) or "|" in location:
        raise StoreError(f"store location '{location}' is not supported yet")
    if is_http_location(location):
        raise StoreError(f"store location '{location}' must be a local directory here")


def _open_one(location: str, options: StoreOptions) -> Store:
    if not location:
        raise UsageError("empty store location")
    if is_http_location(location):
        from desync_ref.stores.http import HTTPStore  # urllib3 only when it is used

        return HTTPStore(location, options.for_location(location))
    _check_local(location)
    return LocalStore(location, uncompressed=options.for_location(location).uncompressed)


def open_store(location: str, options: StoreOptions = DEFAULT_OPTIONS) -> Store:
    """A source store: a directory, an http(s) URL, or a failover group ``a|b|c``."""
    if "|" in location:
        return FailoverGroup([_open_one(member, options) for member in location.split("|")])
    return _open_one(location, options)


def open_writable(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = True) -> WriteStore:
    """A store that takes chunks: a directory or an http(s) chunk server."""
    if is_http_location(location):
        from desync_ref.stores.http import HTTPStore  # urllib3 only when it is used

        return HTTPStore(location, options.for_location(location))
    return open_write_store(location, options, create=create)


def open_write_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = True) -> LocalStore:
    _check_local(location)
    return LocalStore(location, create=create, uncompressed=options.for_location(location).uncompressed)


def open_chain(
    locations: Sequence[str],
    cache: str | None,
    digest: Digest,
    options: StoreOptions = DEFAULT_OPTIONS,
) -> Store:
    """``-s a -s b [-c c]``: a router over the sources, behind the cache if one is given."""
    if not locations:
        raise UsageError("no store given (use -s)")
    stores = [open_store(loc, options) for loc in locations]
    store: Store = stores[0] if len(stores) == 1 else StoreRouter(stores)
    if cache:
        cache_store: WriteStore = open_writable(cache, options)
        return CachedStore(store, cache_store, digest, repair=options.cache_repair)
    return store
