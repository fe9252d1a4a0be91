"""A store whose backing chain can be replaced while in use (chunk-server ``--store-file``).

Behaviour of desync ``swapstore.go``: a SIGHUP builds a new chain from the store file and
swaps it in; requests already running finish on the chain they started with. The old
chain is closed a little later, once those requests are done.

Spec: spec/http.md (chunk-server --store-file and SIGHUP).
"""

from __future__ import annotations

import threading

from desync_ref.errors import StoreError
from desync_ref.stores import Chunk, Store, WriteStore


class SwapStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()

    @property
    def current(self) -> Store:
        return self._store

    def __str__(self) -> str:
        return str(self._store)

    def swap(self, store: Store) -> Store:
        """Install ``store``; a writable chain can only be replaced by a writable one."""
        with self._lock:
            if isinstance(self._store, WriteStore) and not isinstance(store, WriteStore):
                raise StoreError("a writable store can only be swapped for another writable store")
            old, self._store = self._store, store
        return old

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self._store.get_chunk(chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._store.has_chunk(chunk_id)

    def store_chunk(self, chunk: Chunk) -> None:
        store = self._store
        if not isinstance(store, WriteStore):
            raise StoreError(f"store {store} does not support writing")
        store.store_chunk(chunk)

    def remove_chunk(self, chunk_id: bytes) -> None:
        store = self._store
        if isinstance(store, WriteStore):
            store.remove_chunk(chunk_id)

    def close(self) -> None:
        self._store.close()
