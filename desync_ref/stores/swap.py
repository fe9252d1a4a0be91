"""Stores whose backing chain can be replaced while in use (chunk-server ``--store-file``).

Behaviour of desync ``swapstore.go``: a SIGHUP builds a new chain from the store file and
swaps it in; requests already running finish on the chain they started with. The old
chain is closed a little later, once those requests are done (desync closes it at once).

As in desync there are two types, so that what a swap store can do is its type:
:class:`SwapStore` reads (a Store, whatever it wraps), :class:`SwapWriteStore` also takes
chunks and can only be built on, and swapped to, a WriteStore. The swap rule is desync's
(``Swap``): a chain that takes chunks can only be replaced by another that does.

Spec: spec/http.md (chunk-server --store-file and SIGHUP).
"""

from __future__ import annotations

import threading

from desync_ref.errors import StoreError
from desync_ref.formats.chunk import Digest
from desync_ref.stores import Chunk, InlineRead, Store, WriteStore


class SwapStore:
    """A Store (and InlineRead) over a replaceable chain."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.RLock()  # SwapWriteStore.swap holds it around SwapStore.swap

    def __str__(self) -> str:
        return str(self._store)

    def swap(self, store: Store) -> Store:
        """Install ``store`` and return the one it replaces (for the caller to close)."""
        with self._lock:
            if isinstance(self._store, WriteStore) and not isinstance(store, WriteStore):
                raise StoreError("a writable store can only be swapped for another writable store")
            old, self._store = self._store, store
        return old

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        return self._store.get_chunk(chunk_id, digest)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._store.has_chunk(chunk_id)

    def reads_inline(self, uncompressed: bool) -> bool:
        store = self._store
        return isinstance(store, InlineRead) and store.reads_inline(uncompressed)

    def close(self) -> None:
        self._store.close()


class SwapWriteStore(SwapStore):
    """A WriteStore over a replaceable chain that takes chunks."""

    def __init__(self, store: WriteStore) -> None:
        super().__init__(store)
        self._writer = store

    def swap(self, store: Store) -> Store:
        if not isinstance(store, WriteStore):
            raise StoreError("a writable store can only be swapped for another writable store")
        with self._lock:
            old = super().swap(store)
            self._writer = store
        return old

    def store_chunk(self, chunk: Chunk) -> None:
        self._writer.store_chunk(chunk)

    def remove_chunk(self, chunk_id: bytes) -> None:
        self._writer.remove_chunk(chunk_id)
