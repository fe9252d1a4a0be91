"""cat: stream a blob, or a slice of it, from its index and a store (``desync cat``).

Spec: ``spec/index.md`` (offsets). Behaviour of desync ``cmd/desync/cat.go`` and
``readseeker.go``: an offset past the end is refused, an offset equal to the length gives
nothing, a length of 0 (or less) reads to the end. desync streams what it has and then fails
when ``offset + length`` runs past the end; here that range is refused before any byte
is written. Every chunk is verified against its id and its size in the index.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import closing

from desync_ref.errors import InvalidParameter
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.parallel import ordered_map
from desync_ref.stores import Store


def byte_range(index: Index, offset: int, length: int) -> tuple[int, int]:
    """``(start, end)`` of the bytes to write, or InvalidParameter if they leave the blob."""
    if offset < 0:
        raise InvalidParameter(f"invalid offset {offset}", parameter="offset")
    if offset > index.length:
        raise InvalidParameter(f"offset {offset} is past the end of the blob ({index.length} bytes)",
                               parameter="offset")
    if length <= 0:
        return offset, index.length
    if offset + length > index.length:
        raise InvalidParameter(
            f"offset {offset} plus length {length} is past the end of the blob "
            f"({index.length} bytes)",
            parameter="length",
        )
    return offset, offset + length


def iter_range(index: Index, store: Store, start: int, end: int, *,
               workers: int = 1) -> Iterator[bytes]:
    """The blob's bytes ``[start, end)``, in order, chunks fetched ahead in threads."""
    if start >= end:
        return
    ends = [chunk.end for chunk in index.chunks]
    first = bisect.bisect_right(ends, start)
    last = bisect.bisect_left(ends, end)
    source = ChunkSource(store, index)

    def fetch(chunk: IndexChunk) -> bytes:
        if source.is_zero(chunk):
            return bytes(chunk.size)
        return source.get(chunk)  # checked against the id and the entry's size

    wanted = index.chunks[first:last + 1]
    with closing(ordered_map(fetch, wanted, workers)) as results:
        for chunk, data in zip(wanted, results, strict=True):
            lo = max(start - chunk.start, 0)
            hi = min(end - chunk.start, chunk.size)
            yield data[lo:hi] if (lo, hi) != (0, chunk.size) else data
