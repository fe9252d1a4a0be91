"""Several stores tried in order (``-s a -s b``): a miss moves on, any other error aborts.

Spec: ``spec/store.md``; behaviour of desync ``storerouter.go``. A router reads only (desync's
``StoreRouter`` is a ``Store``), whatever its members can do.
"""

from __future__ import annotations

from collections.abc import Sequence

from desync_ref.errors import ChunkMissing
from desync_ref.formats.chunk import Digest
from desync_ref.stores import Chunk, Store


class StoreRouter:
    def __init__(self, stores: Sequence[Store]) -> None:
        self.stores = list(stores)

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.stores)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        for store in self.stores:
            try:
                return store.get_chunk(chunk_id, digest)
            except ChunkMissing:
                continue
        raise ChunkMissing(chunk_id.hex(), str(self))

    def has_chunk(self, chunk_id: bytes) -> bool:
        return any(store.has_chunk(chunk_id) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()
