"""A failover group ``-s "a|b|c"``: one member active at a time, the next on an error.

Spec: ``spec/http.md``; behaviour of desync ``failover.go``. All members are meant to hold
the same chunks, so a missing chunk is an answer, not a failure: it is raised as is. Any
other error makes the next member active (unless a concurrent request already moved on)
and the request is tried there; when every member failed, the last error is raised.

One difference: a chunk that is present but invalid is raised as is too. desync checks
chunks inside the member's ``GetChunk`` and so fails over on ``ChunkInvalid``; desync_ref
checked them after the group returned, and keeps that outcome (a corrupt member is an error
to see, not to route around). A group reads only (desync's ``FailoverGroup`` is a ``Store``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from desync_ref.errors import ChunkInvalid, ChunkMissing, DesyncRefError
from desync_ref.formats.chunk import Digest
from desync_ref.log import get_logger
from desync_ref.stores import Chunk, Store

log = get_logger(__name__)  # --verbose: which store served chunks

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
            except (ChunkMissing, ChunkInvalid):
                raise
            except (DesyncRefError, OSError) as exc:
                error = exc
                self._error_from(index)
                log.info("failover: %s failed (%s), trying the next store of %s", store, exc, self)
        assert error is not None
        raise error

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        return self._call(lambda store: store.get_chunk(chunk_id, digest))

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._call(lambda store: store.has_chunk(chunk_id))

    def close(self) -> None:
        for store in self.stores:
            store.close()
