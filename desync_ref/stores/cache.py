"""A cache in front of a store (``-c``): read first, filled with every chunk fetched past it.

Spec: ``spec/store.md``; behaviour of desync ``cache.go``. With ``repair`` an invalid chunk
in the cache counts as missing, is fetched again and replaces the bad copy.
"""

from __future__ import annotations

from desync_ref.errors import ChunkInvalid, ChunkMissing
from desync_ref.formats.chunk import Digest, verify
from desync_ref.stores import Chunk, Store, WriteStore


class CachedStore:
    def __init__(self, store: Store, cache: WriteStore, digest: Digest, *, repair: bool = True) -> None:
        self.store = store
        self.cache = cache
        self.digest = digest
        self.repair = repair

    def __str__(self) -> str:
        return f"{self.store} (cache {self.cache})"

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        try:
            chunk = self.cache.get_chunk(chunk_id)
            if not self.repair:
                return chunk
            verify(chunk_id, chunk.data(), self.digest)
            return chunk
        except ChunkMissing:
            pass
        except ChunkInvalid:
            if not self.repair:
                raise
        chunk = self.store.get_chunk(chunk_id)
        verify(chunk_id, chunk.data(), self.digest)
        self.cache.store_chunk(chunk)
        return chunk

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.cache.has_chunk(chunk_id) or self.store.has_chunk(chunk_id)

    def close(self) -> None:
        self.cache.close()
        self.store.close()
