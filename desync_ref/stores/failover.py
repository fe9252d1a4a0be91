"""A failover group ``-s "a|b|c"``: one member active at a time, the next on an error.

Spec: ``spec/http.md``; behaviour of desync ``failover.go``. All members are meant to hold
the same chunks, so a missing chunk is an answer, not a failure: it is returned as is. Any
other error makes the next member active (unless a concurrent request already moved on)
and the request is tried there; when every member failed, the last error is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from desync_ref.errors import ChunkMissing, DesyncRefError
from desync_ref.stores import Chunk, Store

T = TypeVar("T")


class FailoverGroup:
    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("a failover group needs at least one store")
        self.stores = list(stores)
        self.active = 0
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.stores)

    def _current(self) -> tuple[Store, int]:
        with self._lock:
            return self.stores[self.active], self.active

    def _error_from(self, index: int) -> None:
        with self._lock:
            if index == self.active:
                self.active = (self.active + 1) % len(self.stores)

    def _call(self, op: Callable[[Store], T]) -> T:
        error: DesyncRefError | OSError | None = None
        for _ in range(len(self.stores)):
            store, index = self._current()
            try:
                return op(store)
            except ChunkMissing:
                raise
            except (DesyncRefError, OSError) as exc:
                error = exc
                self._error_from(index)
        assert error is not None
        raise error

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self._call(lambda store: store.get_chunk(chunk_id))

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._call(lambda store: store.has_chunk(chunk_id))

    def close(self) -> None:
        for store in self.stores:
            store.close()
