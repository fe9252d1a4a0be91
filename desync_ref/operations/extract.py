"""extract: rebuild a blob from its index and a store (``desync extract``).

Every chunk is verified against its id before it is written. A new file is written under a
temp name beside the target and renamed on success; ``in_place`` (``-k``) rewrites only the
chunks that differ, so an interrupted extract can resume. Every write is carried through
short writes; a write that fails (a full disk) ends the run with the target named, and a new
file is then never renamed into place. A new file is fsynced before the rename, so the
final name never holds an empty or partial file after a power loss (spec/store.md
"Durability").

Spec: spec/index.md, spec/store.md (reading chunks).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from desync_ref import kernels
from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.fs.atomic import atomic_output
from desync_ref.operations.chunk_source import ChunkSource
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


# Chunks are handed to worker threads in batches of about this many bytes.
BATCH_BYTES = 1 << 20


def write_at(fd: int, data: bytes, offset: int) -> None:
    """All of ``data`` at ``offset``: ``pwrite`` may write less than it was given."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:  # no progress and no error: give up rather than spin
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]
        offset += written


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
                write_at(fd, data, start)
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
            with _writing(target):
                assemble(fd, index, source, stats, in_place=True, workers=workers)
        finally:
            os.close(fd)
        return stats
    with atomic_output(target) as out, _writing(target):
        assemble(out.fileno(), index, source, stats, in_place=False, workers=workers)
        os.fsync(out.fileno())
    return stats


@contextlib.contextmanager
def _writing(target: str | os.PathLike[str]) -> Iterator[None]:
    """A failed write to the target (ENOSPC, EIO, EFBIG) as one error naming it."""
    try:
        yield
    except OSError as exc:
        raise DesyncRefError(f"cannot write {os.fspath(target)}: {exc.strerror or exc}") from None
