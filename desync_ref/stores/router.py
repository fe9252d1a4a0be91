"""Several stores tried in order (``-s a -s b``): a miss moves on, any other error aborts.

Spec: ``spec/store.md``; behaviour of desync ``storerouter.go``. A router reads only (desync's
``StoreRouter`` is a ``Store``), whatever its members can do.
"""

from __future__ import annotations

from collections.abc import Sequence

from desync_ref.errors import ChunkMissing
from desync_ref.formats.chunk import Digest
from desync_ref.log import get_logger
from desync_ref.stores import Chunk, Store

log = get_logger(__name__)  # --verbose: which store served chunks


class StoreRouter:
    def __init__(self, stores: Sequence[Store]) -> None:
        self.stores = list(stores)
        self._served: set[int] = set()  # stores that have served a chunk (set.add is atomic)

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.stores)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        for number, store in enumerate(self.stores):
            try:
                chunk = store.get_chunk(chunk_id, digest)
            except ChunkMissing:
                continue
            if number not in self._served:  # once per store: per chunk would flood the log
                self._served.add(number)
                log.info("chunks served by %s (store %d of %d)", store, number + 1,
                         len(self.stores))
            return chunk
        raise ChunkMissing(chunk_id.hex(), str(self))

    def has_chunk(self, chunk_id: bytes) -> bool:
        return any(store.has_chunk(chunk_id) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()
