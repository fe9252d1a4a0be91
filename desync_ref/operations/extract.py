"""extract: rebuild a blob from its index and a store (``desync extract``).

Every chunk is verified against its id before it is written. A new file is written under a
temp name beside the target and renamed on success; ``in_place`` (``-k``) rewrites only the
chunks that differ, so an interrupted extract can resume.

Spec: spec/index.md, spec/store.md (reading chunks).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass

from desync_ref import kernels
from desync_ref.formats.chunk import digest_function, verify
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.operations.files import atomic_output
from desync_ref.operations.parallel import ordered_map
from desync_ref.stores import Store

assembler = kernels.load("assembler")


@dataclass
class ExtractStats:
    chunks: int = 0
    fetched: int = 0
    skipped_zero: int = 0
    skipped_in_place: int = 0
    bytes: int = 0


# Repeated chunks are kept in memory between uses up to this many bytes; past it they are
# fetched again, so memory stays flat whatever the index repeats.
KEEP_BUDGET = 64 * 1024 * 1024


class ChunkSource:
    """Fetches, decompresses and verifies chunks; keeps a chunk that is used again."""

    def __init__(self, store: Store, index: Index) -> None:
        self.store = store
        self.digest = digest_function(index.digest)
        uses = Counter(c.id for c in index.chunks)
        self._remaining = {cid: n for cid, n in uses.items() if n > 1}
        self._kept: dict[bytes, bytes] = {}
        self._kept_bytes = 0
        # Runs of zeros chunk into max-size pieces (the window hash is constant), plus
        # possibly a short tail; hashing zeros of just those sizes finds them.
        sizes = {index.chunk_size_max, index.chunk_size_min}
        if index.chunks:
            sizes.add(index.chunks[0].size)
            sizes.add(index.chunks[-1].size)
        self._zero_ids = {self.digest(bytes(size)): size for size in sizes}
        self._lock = threading.Lock()
        self.fetched = 0

    def is_zero(self, chunk: IndexChunk) -> bool:
        return self._zero_ids.get(chunk.id) == chunk.size

    def get(self, chunk: IndexChunk) -> bytes:
        with self._lock:
            kept = self._kept.get(chunk.id)
        if kept is None:
            kept = self.store.get_chunk(chunk.id).data()
            verify(chunk.id, kept, self.digest)
            with self._lock:
                self.fetched += 1
                if (chunk.id in self._remaining and chunk.id not in self._kept
                        and self._kept_bytes + len(kept) <= KEEP_BUDGET):
                    self._kept[chunk.id] = kept
                    self._kept_bytes += len(kept)
        with self._lock:
            left = self._remaining.get(chunk.id)
            if left is not None:
                if left <= 1:
                    dropped = self._kept.pop(chunk.id, None)
                    if dropped is not None:
                        self._kept_bytes -= len(dropped)
                    del self._remaining[chunk.id]
                else:
                    self._remaining[chunk.id] = left - 1
        return kept


# Chunks are handed to worker threads in batches of about this many bytes.
BATCH_BYTES = 1 << 20


def assemble(fd: int, index: Index, source: ChunkSource, stats: ExtractStats, *,
             in_place: bool, workers: int) -> None:
    """Fetch, decompress and verify in worker threads; write from this thread alone.

    Writers to one file queue on its inode lock, so concurrent ``pwrite`` calls only add
    contention; a single writer keeps the threads busy with what runs in parallel.
    """
    digest = source.digest
    chunks = index.chunks
    counts = Counter[str]()

    def load(chunk: IndexChunk) -> tuple[int, bytes | str]:
        """(offset, bytes to write) or (offset, why nothing needs writing)."""
        if in_place:
            existing = os.pread(fd, chunk.size, chunk.start)
            if len(existing) == chunk.size and digest(existing) == chunk.id:
                return chunk.start, "in_place"
        elif source.is_zero(chunk):
            # The file was sized with ftruncate, so a run of zeros stays a hole.
            return chunk.start, "zero"
        return chunk.start, source.get(chunk)

    def load_batch(bounds: tuple[int, int]) -> list[tuple[int, bytes | str]]:
        return [load(chunks[n]) for n in range(*bounds)]

    os.ftruncate(fd, index.length)
    ends = assembler.batch_ends([c.size for c in chunks], BATCH_BYTES)
    batches = zip([0, *ends][:len(ends)], ends, strict=True)
    for batch in ordered_map(load_batch, batches, workers):
        for start, data in batch:
            if isinstance(data, str):
                counts[data] += 1
            else:
                os.pwrite(fd, data, start)
    stats.chunks = len(chunks)
    stats.bytes = index.length
    stats.fetched = source.fetched
    stats.skipped_zero = counts["zero"]
    stats.skipped_in_place = counts["in_place"]


def extract(index: Index, store: Store, target: str | os.PathLike[str], *,
            in_place: bool = False, workers: int = 1) -> ExtractStats:
    stats = ExtractStats()
    source = ChunkSource(store, index)
    if in_place:
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            assemble(fd, index, source, stats, in_place=True, workers=workers)
        finally:
            os.close(fd)
        return stats
    with atomic_output(target) as out:
        assemble(out.fileno(), index, source, stats, in_place=False, workers=workers)
    return stats

