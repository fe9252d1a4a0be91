"""make: chunk a blob into an index, optionally storing the chunks (``desync make``).

Output equals ``casync make [--store=S] --chunk-size=... X.caibx BLOB`` (spec/index.md,
spec/chunker.md); the index carries casync's blob flags (spec/deviations.md).

A large file is chunked on several cores: it is cut into spans, and each span is chunked
in its own process as if a chunk began there (mypyc loops hold the GIL, so threads would
not run them in parallel). Past its span's end a worker goes on until it makes a cut that
the next span's chunker, starting fresh at that end, also makes (it finds the next span's
first cuts itself, which costs the chunker a few chunks' worth): from a shared cut both
chunkers restart from the same state, so from there the next worker's cuts are the serial
chunker's. Where no shared cut appears within ``LOOKAHEAD_CHUNKS`` max-size chunks (data
that never re-synchronises), the gap is chunked serially, so the result is always exactly
the serial chunker's. Spans start at multiples of the max chunk size, where runs of zeros
cut, so all-zero input re-synchronises at once.

Each worker hashes its chunks from views of the block it read (``chunking.chunk_views``: no
chunk is copied to be hashed) and asks the store whether it has each one; nothing is
written while the cuts are still speculative (a span's first cuts, before its list is
joined to the previous one, are in no index). As the parent joins the lists, span by span
in order, the joined list only ever holds the serial chunker's cuts, so the chunks the
store lacked are handed back to the worker processes at once, to be read again (from the
page cache), compressed and written while later spans are still being chunked; each
distinct chunk by one of them. The parent only joins lists and writes the index. This
second reading was chosen over holding compressed
chunks in the workers until the join, which would need memory growing with the span size
(and so with the input), and over storing only chunks already known to be final, which
before the join are only the first span's. So make never writes a chunk its index does not
name and never deletes one: a chunk in the store may already be relied on by a concurrent
make that found it there (spec/store.md "Writing a chunk").

A file with holes (``SEEK_DATA``) is chunked without reading them, serially or in spans
placed by data bytes rather than by length; the chunks are the same (spec/chunker.md §
Holes, operations/sparse_chunks.py).
"""

from __future__ import annotations

import bisect
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, cast

from desync_ref.chunking import READ_BLOCK, Chunker, ChunkSizes, chunk_views, iter_chunks
from desync_ref.errors import DesyncRefError
from desync_ref.formats.chunk import DIGEST_SHA512_256, digest_function
from desync_ref.formats.constants import CA_FORMAT_BLOB_INDEX_FLAGS, CA_FORMAT_SHA512_256
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.fs.holes import has_holes
from desync_ref.operations.parallel import die_with_parent, keep_heap, ordered_map
from desync_ref.operations.sparse_chunks import (
    ZeroIds,
    data_span_starts,
    iter_sparse_chunks,
    iter_sparse_ids,
)
from desync_ref.progress import Bar, Progress, no_progress
from desync_ref.stores import Chunk, WriteStore

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

# Below this size per worker, starting processes costs more than it saves.
MIN_SPAN = 16 * 1024 * 1024
# How far past its span a worker keeps chunking while looking for the shared cut.
LOOKAHEAD_CHUNKS = 16
# The heap thresholds the workers set, see _init_worker.
_WORKER_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX)
_WORKER_TRIM_THRESHOLD = 64 * 1024 * 1024


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


@dataclass
class SpanResult:
    """What one worker found: its cuts and ids, and which of those ids the store lacked
    (with a store, every id was asked about)."""

    start: int
    ends: list[int] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    missing: set[bytes] = field(default_factory=set)


def _store_new(chunk_id: bytes, data: bytes, store: WriteStore | None) -> bool:
    if store is None or store.has_chunk(chunk_id):
        return False
    store.store_chunk(Chunk(chunk_id, data=data))
    return True


def _serial(stream: BinaryIO, base: int, sizes: ChunkSizes, digest_name: str,
            threads: int) -> Iterator[tuple[int, int, bytes]]:
    """(start, size, id) per chunk from ``base`` on, hashed in threads; nothing is stored
    (the parallel path stores only the final list, see ``_store_chunks``)."""
    digest = digest_function(digest_name)

    def process(item: tuple[int, bytes]) -> tuple[int, int, bytes]:
        start, data = item
        return base + start, len(data), digest(data)

    yield from ordered_map(process, iter_chunks(stream, sizes), threads)


def _chunks_from(stream: BinaryIO, base: int, sizes: ChunkSizes, digest_name: str,
                 threads: int) -> Iterator[tuple[int, int, bytes]]:
    """``_serial`` from ``base``; in a file with holes, the holes are not read
    (operations/sparse_chunks.py: the same chunks)."""
    length = os.fstat(stream.fileno()).st_size
    if has_holes(stream.fileno(), length):
        return iter_sparse_ids(stream.fileno(), sizes, digest_name, base, length)
    stream.seek(base)
    return _serial(stream, base, sizes, digest_name, threads)


def _reader(fd: int) -> Callable[[int, int], bytes]:
    """``read(offset, size)`` of an open file: what the workers chunk from."""
    def read(offset: int, size: int) -> bytes:
        return os.pread(fd, size, offset)
    return read


def _cut_ends(fd: int, sparse: bool, start: int, length: int, sizes: ChunkSizes) -> Iterator[int]:
    """The cuts a chunker starting fresh at ``start`` makes (the next span's), read in
    small blocks: only the first few are wanted."""
    if sparse:
        for chunk_start, size, _ in iter_sparse_chunks(fd, sizes, start, length):
            yield chunk_start + size
        return
    for chunk_start, view in chunk_views(_reader(fd), start, length, sizes, block=4 * sizes.max):
        yield chunk_start + len(view)


def _span_chunks(fd: int, sparse: bool, start: int, length: int, sizes: ChunkSizes,
                 digest_name: str) -> Iterator[tuple[int, bytes]]:
    """(end, id) of each chunk a chunker starting at ``start`` cuts. Hashed from views of
    the block read (hashlib takes any buffer: no chunk is copied to be hashed); in a file
    with holes, the holes are not read (operations/sparse_chunks.py)."""
    if sparse:
        for chunk_start, size, chunk_id in iter_sparse_ids(fd, sizes, digest_name, start, length):
            yield chunk_start + size, chunk_id
        return
    digest = cast(Callable[[memoryview], bytes], digest_function(digest_name))
    for chunk_start, view in chunk_views(_reader(fd), start, length, sizes):
        yield chunk_start + len(view), digest(view)


def _chunk_span(path: str, start: int, stop: int, length: int, sizes: ChunkSizes,
                digest_name: str, store: WriteStore | None) -> SpanResult:
    """Worker: chunk from ``start`` as if a chunk began there, up to the first cut at or
    past ``stop`` that the next span's chunker also makes (at most ``LOOKAHEAD_CHUNKS``
    max-size chunks past ``stop``); hash each chunk and note which ones ``store`` lacks.
    Nothing is stored: until the lists are joined, no chunk here is known to be final."""
    result = SpanResult(start)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sparse = has_holes(fd, length)
        following = _cut_ends(fd, sparse, stop, length, sizes) if stop < length else None
        probe = -1
        limit = stop + LOOKAHEAD_CHUNKS * sizes.max
        asked: set[bytes] = set()
        for end, chunk_id in _span_chunks(fd, sparse, start, length, sizes, digest_name):
            result.ends.append(end)
            result.ids.append(chunk_id)
            if store is not None and chunk_id not in asked:
                asked.add(chunk_id)
                if not store.has_chunk(chunk_id):
                    result.missing.add(chunk_id)
            if following is not None and end >= stop:
                while probe < end:
                    probe = next(following, length)
                if probe == end or end >= limit:
                    break
    finally:
        os.close(fd)
    return result


def _store_chunks(path: str, chunks: list[tuple[int, int, bytes, bool]], store: WriteStore) -> list[bytes]:
    """Worker: store each (start, size, id, ask) of the final list, read from ``path``;
    ``ask``: the store was not asked about this id yet (a chunk of a serially chunked gap),
    so it is skipped if the store has it. The ids it wrote."""
    created = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, size, chunk_id, ask in chunks:
            if ask and store.has_chunk(chunk_id):
                continue
            data = os.pread(fd, size, start)
            if len(data) != size:
                raise DesyncRefError(f"{path} changed while it was chunked")
            store.store_chunk(Chunk(chunk_id, data=data))
            created.append(chunk_id)
    finally:
        os.close(fd)
    return created


def _init_worker(parent: int) -> None:
    """Start of each make worker process: die with the parent, and keep freed blocks.

    A worker reads each span in blocks of ``READ_BLOCK`` bytes (``os.pread`` makes a new
    ``bytes`` per block: the chunker kernel takes only ``bytes``, never a reused buffer).
    glibc's own thresholds, raised by the first freed block, serve the blocks of one span
    from the heap without new pages, but when a span ends its two freed blocks exceed the
    trim threshold and go back to the kernel, so every span faulted 8 MiB of fresh pages
    in again (about 2000 page faults per span, 16k of make's 30k on 512 MiB). Fixed
    thresholds above the blocks' size keep them in the heap for the next span; the
    worker's peak memory does not change, only what it returns between spans (glibc only:
    operations/parallel.keep_heap)."""
    die_with_parent(parent)
    keep_heap(_WORKER_TRIM_THRESHOLD, _WORKER_MMAP_THRESHOLD)


def span_starts(length: int, sizes: ChunkSizes, workers: int) -> list[int]:
    if workers <= 1 or length < 2 * MIN_SPAN:
        return [0]
    count = min(workers * 4, length // MIN_SPAN)
    step = max(sizes.max, (length // count) // sizes.max * sizes.max)
    return list(range(0, length - step // 2, step))


def _splice(spans: _Spans, length: int, stream: BinaryIO, sizes: ChunkSizes, digest: str,
            grown: Callable[[list[int], list[bytes]], None]) -> tuple[list[int], list[bytes]]:
    """Join the workers' lists at their shared cuts; chunk serially where none is shared.
    ``grown`` sees the list after every step. The list is always a prefix of the serial
    chunker's: the first span's list is (it starts at 0), a join keeps the cuts up to a
    cut both lists share and appends the later span's cuts past it, which restart there in
    the serial chunker's state, and the serial gaps are the serial chunker's own."""
    ends, ids = list(spans[0].ends), list(spans[0].ids)
    grown(ends, ids)
    later = 1
    while later < len(spans) and (not ends or ends[-1] < length):
        span = spans[later]
        joined = _join(ends, ids, span)
        if joined:
            later += 1
            grown(ends, ids)
            continue
        if ends and ends[-1] >= span.ends[-1]:
            later += 1  # the current list already runs past this span: try the next one
            continue
        # No shared cut within the lookahead: chunk serially until a cut of this or a
        # later span appears.
        base = ends[-1] if ends else 0
        targets = {end for n in range(later, len(spans)) for end in spans[n].ends}
        for start, size, chunk_id in _chunks_from(stream, base, sizes, digest, 2):
            ends.append(start + size)
            ids.append(chunk_id)
            if start + size in targets:
                break
        grown(ends, ids)
    return ends, ids


def _join(ends: list[int], ids: list[bytes], span: SpanResult) -> bool:
    """Append ``span``'s cuts after the first cut both lists share; False if there is none."""
    shared = set(span.ends)
    for n in range(bisect.bisect_left(ends, span.start), len(ends)):
        if ends[n] in shared:
            at = span.ends.index(ends[n])
            del ends[n + 1:]
            del ids[n + 1:]
            ends.extend(span.ends[at + 1:])
            ids.extend(span.ids[at + 1:])
            return True
    return False


class StreamIndexer:
    """Push-driven make: ``feed`` a blob's bytes as they come, ``finish`` for the index.

    Chunks are cut by the chunker driver, hashed and (if new) stored on up to ``workers``
    threads with at most ``2 * workers`` chunks in flight, so memory stays flat however
    long the stream is. ``close`` drops the work in flight (after an error).
    """

    def __init__(self, sizes: ChunkSizes, *, digest: str = DIGEST_SHA512_256,
                 store: WriteStore | None = None, workers: int = 1,
                 progress: Progress = no_progress, operation: str = "Chunking",
                 total: int = 0) -> None:
        self._bar = progress(operation, total)  # in bytes fed
        self._sizes, self._digest_name, self._store = sizes, digest, store
        self._digest = digest_function(digest)
        self._chunker = Chunker(sizes)
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._window: deque[Future[tuple[int, int, bytes, bool]]] = deque()
        self._ends: list[int] = []
        self._ids: list[bytes] = []
        self._created: set[bytes] = set()

    def _process(self, start: int, data: bytes,
                 known: bytes | None = None) -> tuple[int, int, bytes, bool]:
        chunk_id = known or self._digest(data)
        return start, len(data), chunk_id, _store_new(chunk_id, data, self._store)

    def _record(self, result: tuple[int, int, bytes, bool]) -> None:
        start, size, chunk_id, new = result
        self._ends.append(start + size)
        self._ids.append(chunk_id)
        if new:
            self._created.add(chunk_id)

    def _add(self, chunks: list[tuple[int, bytes]]) -> None:
        for start, data in chunks:
            if self._pool is None:
                self._record(self._process(start, data))
                continue
            self._window.append(self._pool.submit(self._process, start, data))
            if len(self._window) >= 2 * self._workers:
                self._record(self._window.popleft().result())

    def add_chunk(self, start: int, data: bytes, chunk_id: bytes | None) -> None:
        """A chunk cut elsewhere (the hole-aware scan), with its id if already known;
        chunks go either through here or through ``feed``, not both."""
        if self._pool is None:
            self._record(self._process(start, data, chunk_id))
        else:
            self._window.append(self._pool.submit(self._process, start, data, chunk_id))
            if len(self._window) >= 2 * self._workers:
                self._record(self._window.popleft().result())
        self._bar.update(len(data))

    def add_repeat(self, start: int, size: int, chunk_id: bytes) -> None:
        """A chunk whose id already went through ``add_chunk`` (a run of zeros): recorded
        in order, not hashed or looked up again."""
        while self._window:
            self._record(self._window.popleft().result())
        self._record((start, size, chunk_id, False))
        self._bar.update(size)

    def feed(self, data: bytes) -> None:
        self._add(self._chunker.feed(data))
        self._bar.update(len(data))

    def finish(self) -> tuple[Index, MakeStats]:
        try:
            self._add(self._chunker.finish())
            while self._window:
                self._record(self._window.popleft().result())
        finally:
            self.close()
        return _finish(self._ends, self._ids, self._created, self._sizes, self._digest_name)

    def close(self) -> None:
        for future in self._window:
            future.cancel()
        self._window.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._bar.close()


def make_index_from_stream(stream: BinaryIO, sizes: ChunkSizes, *, digest: str = DIGEST_SHA512_256,
                           store: WriteStore | None = None, workers: int = 1,
                           progress: Progress = no_progress,
                           total: int = 0) -> tuple[Index, MakeStats]:
    """Index of a stream read once, front to back (a pipe, or a file too small to split)."""
    indexer = StreamIndexer(sizes, digest=digest, store=store, workers=workers,
                            progress=progress, total=total)
    try:
        while block := stream.read(READ_BLOCK):
            indexer.feed(block)
    except BaseException:
        indexer.close()
        raise
    return indexer.finish()


def make_index(path: str, sizes: ChunkSizes, *, digest: str = DIGEST_SHA512_256,
               store: WriteStore | None = None, workers: int = 1,
               progress: Progress = no_progress) -> tuple[Index, MakeStats]:
    """Index of the file at ``path``, chunked on ``workers`` processes, storing new chunks.
    ``progress``: "Chunking" in bytes, then "Storing" in chunks (desync's two bars); a
    file chunked in one stream stores as it chunks, under the one "Chunking" bar."""
    with open(path, "rb") as source:
        length = os.fstat(source.fileno()).st_size
        sparse = has_holes(source.fileno(), length)
        starts = (data_span_starts(source.fileno(), length, sizes, workers, MIN_SPAN) if sparse
                  else span_starts(length, sizes, workers))
        if sparse and (len(starts) == 1 or sizes.fixed):
            return _index_sparse(source.fileno(), length, sizes, digest=digest, store=store,
                                 workers=workers, progress=progress)
        if len(starts) == 1 or sizes.fixed:
            return make_index_from_stream(source, sizes, digest=digest, store=store,
                                          workers=workers, progress=progress, total=length)
        bounds = [*starts[1:], length]
        import multiprocessing  # here: a file chunked in one stream never loads it
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=_init_worker, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_chunk_span, path, s, e, length, sizes, digest, store)
                       for s, e in zip(starts, bounds, strict=True)]
            storing: _StorePass | None = None
            try:
                bar = progress("Chunking", length)
                try:
                    spans = _Spans(futures, [e - s for s, e in zip(starts, bounds, strict=True)], bar)
                    storing = _StorePass(path, store, pool, spans) if store is not None else None
                    ends, ids = _splice(spans, length, source, sizes, digest,
                                        storing.grown if storing is not None else _ignore)
                    spans.wait_all()  # the splice may not need the last ones
                finally:
                    bar.close()
                created = storing.finish(len(set(ids)), progress) if storing is not None else set()
            except BaseException:
                for future in futures:
                    future.cancel()
                if storing is not None:
                    storing.cancel()
                raise
    return _finish(ends, ids, created, sizes, digest)


def _index_sparse(fd: int, length: int, sizes: ChunkSizes, *, digest: str,
                  store: WriteStore | None, workers: int,
                  progress: Progress) -> tuple[Index, MakeStats]:
    """``make_index_from_stream`` for a file with holes: the holes are not read, and the
    zero chunks there are hashed once per size (operations/sparse_chunks.py)."""
    indexer = StreamIndexer(sizes, digest=digest, store=store, workers=workers,
                            progress=progress, total=length)
    zero_ids = ZeroIds(digest)
    seen: set[int] = set()  # sizes of the zero chunks handed on once
    try:
        for start, size, data in iter_sparse_chunks(fd, sizes, 0, length):
            if data is None and size in seen:
                indexer.add_repeat(start, size, zero_ids(size))
            elif data is None:
                seen.add(size)
                indexer.add_chunk(start, bytes(size), zero_ids(size))
            else:
                indexer.add_chunk(start, data, None)
    except BaseException:
        indexer.close()
        raise
    return indexer.finish()


def _ignore(ends: list[int], ids: list[bytes]) -> None:
    pass


class _Spans:
    """The workers' results in span order, each waited for when the splice first needs it,
    so the first spans are joined (and their chunks stored) while later ones are chunked."""

    def __init__(self, futures: list[Future[SpanResult]], sizes: list[int], bar: Bar) -> None:
        self._futures, self._sizes, self._bar = futures, sizes, bar
        self.arrived: list[SpanResult] = []

    def __len__(self) -> int:
        return len(self._futures)

    def __getitem__(self, n: int) -> SpanResult:
        while len(self.arrived) <= n:
            self.arrived.append(self._futures[len(self.arrived)].result())
            self._bar.update(self._sizes[len(self.arrived) - 1])
        return self.arrived[n]

    def wait_all(self) -> None:
        if self._futures:
            self[len(self._futures) - 1]


class _StorePass:
    """Stores the chunks of the joined list that the store lacks, on the workers, as the
    list grows: every chunk in it is final (see ``_splice``), so it is written while later
    spans are still being chunked, and each distinct chunk by one worker."""

    def __init__(self, path: str, store: WriteStore, pool: ProcessPoolExecutor, spans: _Spans) -> None:
        self._path, self._store, self._pool, self._spans = path, store, pool, spans
        self._done = 0  # chunks of the list handed on
        self._seen: set[bytes] = set()
        self._work: list[tuple[Future[list[bytes]], int]] = []
        self._asked: set[bytes] = set()
        self._missing: set[bytes] = set()
        self._spans_seen = 0

    def _learn(self) -> None:
        """What the workers of the arrived spans found in the store."""
        arrived = self._spans.arrived
        for span in arrived[self._spans_seen:]:
            self._asked.update(span.ids)
            self._missing |= span.missing
        self._spans_seen = len(arrived)

    def grown(self, ends: list[int], ids: list[bytes]) -> None:
        if len(ends) <= self._done:
            return  # a join re-made cuts already handed on (they are the same cuts)
        self._learn()
        group: list[tuple[int, int, bytes, bool]] = []
        start = ends[self._done - 1] if self._done else 0
        for n in range(self._done, len(ends)):
            chunk_id = ids[n]
            if chunk_id not in self._seen:
                self._seen.add(chunk_id)
                if chunk_id in self._missing:
                    group.append((start, ends[n] - start, chunk_id, False))
                elif chunk_id not in self._asked:  # a chunk of a serially chunked gap
                    group.append((start, ends[n] - start, chunk_id, True))
            start = ends[n]
        self._done = len(ends)
        if group:
            self._work.append((self._pool.submit(_store_chunks, self._path, group, self._store), len(group)))

    def cancel(self) -> None:
        """Drop the writes not yet started (after an error)."""
        for future, _ in self._work:
            future.cancel()

    def finish(self, unique: int, progress: Progress) -> set[bytes]:
        """Wait for the writes; the "Storing" bar counts every distinct chunk, those the
        store had at once."""
        created: set[bytes] = set()
        bar = progress("Storing", unique)
        try:
            bar.update(unique - sum(count for _, count in self._work))
            for future, count in self._work:
                created.update(future.result())
                bar.update(count)
        finally:
            bar.close()
        return created


def _finish(ends: list[int], ids: list[bytes], created: set[bytes], sizes: ChunkSizes,
            digest: str) -> tuple[Index, MakeStats]:
    """The index; ``created`` holds only chunks of the index (nothing speculative is stored)."""
    index = Index(blob_index_flags(digest), sizes.min, sizes.avg, sizes.max)
    start = 0
    for end, chunk_id in zip(ends, ids, strict=True):
        index.chunks.append(IndexChunk(start, end - start, chunk_id))
        start = end
    stats = MakeStats(chunks=len(ids), unique=len(set(ids)), stored=len(created), bytes=start)
    return index, stats
