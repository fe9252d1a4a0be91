"""Chunking a file with holes without reading its holes; chunk ids of zero runs.

Spec: ``spec/chunker.md`` § "Holes". The cuts are casync's (``ca_chunker_scan`` in
``src/cachunker.c``, the rule in ``desync_ref.kernels.chunker.find_cut``): a chunk's cut
depends only on the bytes from its start to at most ``reach = max(max, min, 48)`` bytes
past it, and each hash test only on the 48-byte window before the tested length. Over a
chunk whose bytes are all zeros every tested window is 48 zeros, whose hash is one constant
(``zero_window_hash``), so where such a chunk is cut is known without reading it
(``zero_chunk_length``). Chunks that touch data are cut by the kernel over the bytes read
with ``fs.holes.read_sparse`` (data regions read, holes made in memory), so every layout of
data and holes gives exactly the cuts of the file read in full.

desync does the same for parallel make (``NullChunk`` in ``nullchunk.go``, assuming a run of
zeros always cuts at ``max``); here the zero rule is derived from the chunk sizes in use.
"""

from __future__ import annotations

from collections.abc import Iterator

from desync_ref import kernels
from desync_ref.chunking import READ_BLOCK, ChunkSizes, iter_cuts
from desync_ref.errors import DesyncRefError
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import IndexChunk
from desync_ref.fs.holes import data_regions, next_data, read_sparse

WINDOW_SIZE = 48  # CA_CHUNKER_WINDOW_SIZE (cachunker.h)


def zero_window_hash() -> int:
    """The buzhash of 48 zero bytes (``ca_chunker_start`` over zeros), from the kernel."""
    buzhash = kernels.load("chunker").buzhash
    value: int = buzhash(bytes(WINDOW_SIZE), 0, WINDOW_SIZE)
    return value


def zero_chunk_length(sizes: ChunkSizes) -> int:
    """Where a chunk made of zeros only is cut (if the input lasts that long).

    Fixed size: every ``avg``. Otherwise the first test is at ``F = max(min, 48)``; if
    ``F >= max`` the size alone cuts there. Every tested window holds zeros, so each test
    sees the same hash: if it passes the discriminator test the chunk is cut at ``F``,
    else at ``max``.
    """
    if sizes.fixed:
        return sizes.avg
    first = max(sizes.min, WINDOW_SIZE)
    if first >= sizes.max:
        return first
    d = sizes.discriminator
    return first if zero_window_hash() % d == d - 1 else sizes.max


def reach(sizes: ChunkSizes) -> int:
    """How far past a chunk's start its cut can depend on the bytes."""
    if sizes.fixed:
        return sizes.avg
    return max(sizes.max, sizes.min, WINDOW_SIZE)


def iter_sparse_chunks(fd: int, sizes: ChunkSizes, start: int,
                       end: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(offset, size, bytes) of each chunk of ``fd``'s [start, end), as a chunker starting
    at ``start`` cuts them; the bytes are None for a chunk that lies in a hole (all zeros,
    never read). Runs of holes cost a few ``lseek`` calls and no reading."""
    zero_length = zero_chunk_length(sizes)
    span = reach(sizes)
    batch = max(READ_BLOCK, 4 * span)
    pos = start
    data_at = -1  # the first offset >= pos that may hold data, valid while data_at >= pos
    while pos < end:
        if data_at < pos:
            data_at = next_data(fd, pos, end)
        if data_at >= min(pos + zero_length, end):
            # This chunk (and maybe many more) is all zeros: cut without reading.
            if pos + zero_length > end:
                yield pos, end - pos, None
                return
            while pos + zero_length <= data_at:
                yield pos, zero_length, None
                pos += zero_length
            continue
        stop = _batch_end(fd, data_at, pos, end, span, batch)
        buffer = read_sparse(fd, pos, stop - pos)
        if len(buffer) != stop - pos:
            raise DesyncRefError(f"file shrank while being read (at offset {pos + len(buffer)})")
        last = 0
        for cut in iter_cuts(buffer, sizes, final=stop == end):
            yield pos + last, cut - last, buffer[last:cut]
            last = cut
        pos += last


def _batch_end(fd: int, data_at: int, pos: int, end: int, span: int, batch: int) -> int:
    """End of the next stretch to read and scan from ``pos``: the data from ``data_at`` on,
    across holes too short to be worth skipping, plus ``span`` bytes so that the chunks
    running from the data into the next hole are cut in the same scan. At least ``2 *
    span`` bytes (or up to ``end``), so the scan always completes a chunk."""
    limit = min(end, pos + batch)
    covered = data_at
    for offset, length in data_regions(fd, data_at, limit):
        if offset - covered > 2 * span:
            break
        covered = offset + length
    return max(min(limit, covered + span), min(end, pos + 2 * span))


class ZeroIds:
    """Ids of all-zero chunks, computed once per size."""

    def __init__(self, digest_name: str) -> None:
        self._digest = digest_function(digest_name)
        self._ids: dict[int, bytes] = {}

    def __call__(self, size: int) -> bytes:
        chunk_id = self._ids.get(size)
        if chunk_id is None:
            chunk_id = self._ids[size] = self._digest(bytes(size))
        return chunk_id


def iter_sparse_ids(fd: int, sizes: ChunkSizes, digest_name: str, start: int,
                    end: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, size, id) of each chunk of [start, end), as ``iter_sparse_chunks`` cuts them."""
    digest = digest_function(digest_name)
    zero_ids = ZeroIds(digest_name)
    for offset, size, data in iter_sparse_chunks(fd, sizes, start, end):
        yield offset, size, zero_ids(size) if data is None else digest(data)


def in_hole(fd: int, chunk: IndexChunk, length: int) -> bool:
    """Whether ``chunk``'s bytes lie in a hole of ``fd`` (``length`` bytes long): they
    read as zeros. Never for a chunk running past ``length`` (it cannot be read whole)."""
    end = chunk.start + chunk.size
    if chunk.size == 0 or end > length:
        return False
    return next_data(fd, chunk.start, end) >= end


def data_span_starts(fd: int, length: int, sizes: ChunkSizes, workers: int,
                     min_span: int) -> list[int]:
    """Where parallel make's spans start in a file with holes: at equal shares of its data
    bytes (not of its length), so no worker gets only holes; each start is a multiple of
    ``max`` at or before the data it is placed on. [0] when there is too little data to
    split."""
    regions = data_regions(fd, 0, length)
    total = sum(size for _, size in regions)
    if workers <= 1 or total < 2 * min_span:
        return [0]
    count = min(workers * 4, total // min_span)
    share = total // count
    starts = [0]
    seen = 0
    target = share
    for offset, size in regions:
        while target < seen + size and len(starts) < count:
            at = (offset + target - seen) // sizes.max * sizes.max
            if at > starts[-1]:
                starts.append(at)
            target += share
        seen += size
    return starts
