"""Where extract, cat and untar -i get their chunks: fetched from the store chain (which
checks each against the index's digest and the entry's size as it builds it, in the calling
worker thread, decompressing no further than the index's max chunk size), and kept in
memory between two uses of a chunk that the index repeats (within a fixed budget).

Spec: spec/store.md (reading chunks) and spec/index.md (zero chunks).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from operator import attrgetter

from desync_ref.formats.chunk import ChunkCheck, check_size, digest_function
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.stores import Store

# Repeated chunks are kept in memory between uses up to this many bytes; past it they are
# fetched again, so memory stays flat whatever the index repeats.
KEEP_BUDGET = 64 * 1024 * 1024

_ID = attrgetter("id")


def _repeated(chunks: Iterable[IndexChunk]) -> dict[bytes, int]:
    """Ids used more than once, with their counts. Counted in C (``Counter`` over a
    ``map``); when no id repeats, as in most indexes, the result is known without a
    Python-level pass over the counts."""
    uses = Counter(map(_ID, chunks))
    if uses.total() == len(uses):
        return {}
    return {cid: n for cid, n in uses.items() if n > 1}


class ChunkSource:
    """Fetches checked chunks; keeps a chunk that is used again."""

    def __init__(self, store: Store, index: Index) -> None:
        self.store = store
        self.digest = digest_function(index.digest)
        # Repeated ids, counted on first use: extract replaces them (expect) before any.
        self._chunks = index.chunks
        self._repeats: dict[bytes, int] | None = None
        self._kept: dict[bytes, bytes] = {}
        self._kept_bytes = 0
        # Runs of zeros chunk into max-size pieces (the window hash is constant), plus
        # possibly a short tail; hashing zeros of just those sizes finds them.
        sizes = {index.chunk_size_max, index.chunk_size_min}
        if index.chunks:
            sizes.add(index.chunks[0].size)
            sizes.add(index.chunks[-1].size)
        self._zero_ids = {self.digest(bytes(size)): size for size in sizes}
        self._limit = index.chunk_size_max
        self.keep_budget = KEEP_BUDGET
        self._lock = threading.Lock()
        self.fetched = 0

    def expect(self, chunks: list[IndexChunk]) -> None:
        """Only these entries will be fetched (extract takes the others from seeds or the
        output itself): keep in memory only the chunks repeated among them."""
        repeats = _repeated(chunks)
        with self._lock:
            self._repeats = repeats

    def _remaining(self) -> dict[bytes, int]:
        """Uses left of each repeated id (called with the lock held)."""
        if self._repeats is None:
            self._repeats = _repeated(self._chunks)
        return self._repeats

    def is_zero(self, chunk: IndexChunk) -> bool:
        return self._zero_ids.get(chunk.id) == chunk.size

    def zeros_among(self, ids: list[bytes], sizes: list[int]) -> list[int]:
        """The positions of the all-zero entries among these (ids and sizes of index
        entries, in the same order): :meth:`is_zero` for each, with the common case (no
        zero chunk at all) settled by one C-level disjointness test."""
        zero = self._zero_ids
        if zero.keys().isdisjoint(ids):
            return []
        return [n for n, (cid, size) in enumerate(zip(ids, sizes, strict=True))
                if zero.get(cid) == size]

    def get(self, chunk: IndexChunk) -> bytes:
        with self._lock:
            kept = self._kept.get(chunk.id)
        if kept is not None:
            # A kept chunk was checked against its first entry; an index may repeat the id
            # with another size.
            check_size(chunk.id, kept, chunk.size)
        else:
            check = ChunkCheck(self.digest, chunk.size, self._limit)
            kept = self.store.get_chunk(chunk.id, check).data()
            with self._lock:
                self.fetched += 1
                if (chunk.id in self._remaining() and chunk.id not in self._kept
                        and self._kept_bytes + len(kept) <= self.keep_budget):
                    self._kept[chunk.id] = kept
                    self._kept_bytes += len(kept)
        with self._lock:
            remaining = self._remaining()
            left = remaining.get(chunk.id)
            if left is not None:
                if left <= 1:
                    dropped = self._kept.pop(chunk.id, None)
                    if dropped is not None:
                        self._kept_bytes -= len(dropped)
                    del remaining[chunk.id]
                else:
                    remaining[chunk.id] = left - 1
        return kept
