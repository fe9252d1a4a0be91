"""make: chunk a blob into an index, optionally storing the chunks (``desync make``).

Output equals ``casync make [--store=S] --chunk-size=... X.caibx BLOB`` (spec/index.md,
spec/chunker.md); the index carries casync's blob flags (spec/deviations.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from desync_ref.chunking import ChunkSizes, iter_chunks
from desync_ref.formats.chunk import DIGEST_SHA512_256, digest_function
from desync_ref.formats.constants import CA_FORMAT_BLOB_INDEX_FLAGS, CA_FORMAT_SHA512_256
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.stores import Chunk, WriteStore


def blob_index_flags(digest: str) -> int:
    if digest == DIGEST_SHA512_256:
        return CA_FORMAT_BLOB_INDEX_FLAGS
    return CA_FORMAT_BLOB_INDEX_FLAGS & ~CA_FORMAT_SHA512_256


@dataclass
class MakeStats:
    chunks: int = 0
    unique: int = 0
    stored: int = 0
    bytes: int = 0


def _process(data: bytes, digest_name: str, store: WriteStore | None) -> tuple[bytes, bool]:
    # Runs in a worker thread: hashlib and zstandard release the GIL.
    chunk_id = digest_function(digest_name)(data)
    if store is None or store.has_chunk(chunk_id):
        return chunk_id, False
    store.store_chunk(Chunk(chunk_id, data=data))
    return chunk_id, True


def _pipelined(stream: BinaryIO, sizes: ChunkSizes, digest: str, store: WriteStore | None,
               workers: int) -> Iterator[tuple[int, int, bytes, bool]]:
    """(start, size, id, stored) per chunk, in order, with hashing and storing in threads."""
    window: deque[tuple[int, int, Future[tuple[bytes, bool]]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start, data in iter_chunks(stream, sizes):
            window.append((start, len(data), pool.submit(_process, data, digest, store)))
            while len(window) > 2 * workers:
                s, n, fut = window.popleft()
                yield (s, n, *fut.result())
        while window:
            s, n, fut = window.popleft()
            yield (s, n, *fut.result())


def make_index(stream: BinaryIO, sizes: ChunkSizes, *, digest: str = DIGEST_SHA512_256,
               store: WriteStore | None = None, workers: int = 1) -> tuple[Index, MakeStats]:
    index = Index(blob_index_flags(digest), sizes.min, sizes.avg, sizes.max)
    stats = MakeStats()
    seen: set[bytes] = set()
    for start, size, chunk_id, stored in _pipelined(stream, sizes, digest, store, workers):
        index.chunks.append(IndexChunk(start, size, chunk_id))
        stats.chunks += 1
        stats.bytes += size
        stats.stored += stored
        if chunk_id not in seen:
            seen.add(chunk_id)
            stats.unique += 1
    return index, stats
