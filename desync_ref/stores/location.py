"""Turn a store location string into a store, and compose ``-s``/``-c`` as desync does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from desync_ref.errors import StoreError, UsageError
from desync_ref.formats.chunk import Digest
from desync_ref.stores import Store, WriteStore
from desync_ref.stores.cache import CachedStore
from desync_ref.stores.local import LocalStore
from desync_ref.stores.router import StoreRouter

_REMOTE_SCHEMES = ("http://", "https://", "s3+", "gs://", "sftp://", "ssh://")


@dataclass(frozen=True)
class StoreOptions:
    uncompressed: bool = False
    cache_repair: bool = True


def _check_local(location: str) -> None:
    if not location:
        raise UsageError("empty store location")
    if location.startswith(_REMOTE_SCHEMES) or "|" in location:
        raise StoreError(f"store location '{location}' is not supported yet")


def open_store(location: str, options: StoreOptions = StoreOptions()) -> Store:
    _check_local(location)
    return LocalStore(location, uncompressed=options.uncompressed)


def open_write_store(location: str, options: StoreOptions = StoreOptions(), *, create: bool = True) -> LocalStore:
    _check_local(location)
    return LocalStore(location, create=create, uncompressed=options.uncompressed)


def open_chain(
    locations: Sequence[str],
    cache: str | None,
    digest: Digest,
    options: StoreOptions = StoreOptions(),
) -> Store:
    """``-s a -s b [-c c]``: a router over the sources, behind the cache if one is given."""
    if not locations:
        raise UsageError("no store given (use -s)")
    stores = [open_store(loc, options) for loc in locations]
    store: Store = stores[0] if len(stores) == 1 else StoreRouter(stores)
    if cache:
        cache_store: WriteStore = open_write_store(cache, options)
        return CachedStore(store, cache_store, digest, repair=options.cache_repair)
    return store
