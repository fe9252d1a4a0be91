"""A cache in front of a store (``-c``): read first, filled with every chunk fetched past it.

Spec: ``spec/store.md``; behaviour of desync ``cache.go`` (``Cache``, ``RepairableCache``).
With ``repair`` a chunk in the cache is checked with the cache's digest; an invalid one
counts as missing, is fetched again and replaces the bad copy. Without it the cached chunk
is checked only as the caller asks, and a bad one is an error. A chunk fetched from the
store behind is always checked before it goes into the cache, so the cache only ever
receives good chunks. When the caller's digest carries an index entry (a ChunkCheck), the
cache's digest is used with the same entry, so the size check and decompression bound
hold through the cache too.

An empty or undecodable chunk file in the cache (a write cut short by a power loss: chunks
are not fsynced, spec/store.md "Durability") is invalid, so with ``repair`` it is fetched
again and replaced.

A CachedStore reads; it does not take chunks itself (desync's ``Cache`` is a ``Store``).
"""

from __future__ import annotations

from desync_ref.errors import ChunkInvalid, ChunkMissing
from desync_ref.formats.chunk import ChunkCheck, Digest
from desync_ref.log import get_logger
from desync_ref.stores import Chunk, Store, WriteStore

log = get_logger(__name__)  # --verbose: which store served chunks


class CachedStore:
    def __init__(self, store: Store, cache: WriteStore, digest: Digest, *, repair: bool = True) -> None:
        self.store = store
        self.cache = cache
        self.digest = digest
        self.repair = repair
        self._logged = False

    def __str__(self) -> str:
        return f"{self.store} (cache {self.cache})"

    def _own(self, digest: Digest | None) -> Digest:
        """The cache's digest, with the caller's index entry if it gave one."""
        if isinstance(digest, ChunkCheck):
            return ChunkCheck(self.digest, digest.size, digest.limit)
        return self.digest

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        own = self._own(digest)
        try:
            return self.cache.get_chunk(chunk_id, own if self.repair else digest)
        except ChunkMissing:
            pass
        except ChunkInvalid:
            if not self.repair:
                raise
        chunk = self.store.get_chunk(chunk_id, own)
        self.cache.store_chunk(chunk)
        if not self._logged:  # the first one only: per chunk would flood the log
            self._logged = True
            log.info("chunks not in cache %s are fetched from %s and stored in the cache",
                     self.cache, self.store)
        return chunk

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.cache.has_chunk(chunk_id) or self.store.has_chunk(chunk_id)

    def close(self) -> None:
        self.cache.close()
        self.store.close()
