"""verify (a local store's chunks) and verify-index (a file against its index).

Spec: ``spec/store.md`` (a chunk file is valid when it decompresses and hashes to its id),
``spec/index.md`` (chunk offsets and sizes). Behaviour of desync ``local.go``
(``LocalStore.Verify``: one line per bad chunk, ``: removed`` with repair, the walk
carries on) and ``verifyindex.go`` (``VerifyIndex``: sizes first, then every chunk). A chunk lying in a
hole of the file is zeros: its id is the zero chunk's of that size, computed once, and the
hole is not read (spec/chunker.md § "Holes").

Repair removes only chunks proven invalid (they do not decompress or do not hash to their
id), as desync does (its ``ChunkInvalid`` case). A chunk that cannot be read at all (EACCES,
EIO) proves nothing about its bytes: it is reported and kept, and once the walk is done
the run fails (desync prints such errors and succeeds).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass

from desync_ref.errors import ChunkInvalid, ChunkMissing, DesyncRefError, InvalidFormat, StoreError
from desync_ref.formats.chunk import Digest, digest_function
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.operations.parallel import ordered_map
from desync_ref.operations.sparse_chunks import ZeroIds, in_hole
from desync_ref.progress import Bar, Progress, no_progress
from desync_ref.stores.local import LocalStore


@dataclass
class VerifyStats:
    checked: int = 0
    invalid: int = 0
    removed: int = 0
    unreadable: int = 0


def verify_store(store: LocalStore, digest: Digest, *, repair: bool = False, workers: int = 1,
                 report: Callable[[str], None] = print,
                 progress: Progress = no_progress) -> VerifyStats:
    """Check every chunk file of the store; ``report`` gets one line per invalid or
    unreadable chunk. Raises StoreError at the end if some chunk could not be read."""
    stats = VerifyStats()
    ids = list(store.chunk_ids())

    def check(chunk_id: bytes) -> tuple[bytes, str | None, type[Exception] | None]:
        """(id, problem or None, the kind of problem)."""
        try:
            store.get_chunk(chunk_id, digest)  # checked as it is built
        except (ChunkInvalid, ChunkMissing) as exc:
            return chunk_id, str(exc), type(exc)
        except (DesyncRefError, OSError) as exc:  # unreadable: report, keep, carry on
            return chunk_id, str(exc), StoreError
        return chunk_id, None, None

    bar = progress("Verifying", len(ids))
    try:
        _verify(stats, ordered_map(check, ids, workers), store, repair, report, bar)
    finally:
        bar.close()
    if stats.unreadable:
        raise StoreError(f"{stats.unreadable} of {stats.checked} chunks in {store} could not be read")
    return stats


def _verify(stats: VerifyStats,
            results: Iterable[tuple[bytes, str | None, type[Exception] | None]],
            store: LocalStore, repair: bool, report: Callable[[str], None], bar: Bar) -> None:
    for chunk_id, problem, kind in results:
        stats.checked += 1
        bar.update(1)
        if problem is None:
            continue
        if kind is not ChunkInvalid:
            # Gone since the listing (or casync's missing marker): reported, as before.
            # Unreadable: reported and kept, and the run fails at the end.
            stats.unreadable += kind is StoreError
            report(problem)
            continue
        stats.invalid += 1
        if repair:
            try:
                store.remove_chunk(chunk_id)
            except OSError as exc:
                problem = f"{problem}: {exc.strerror}"
            else:
                problem = f"{problem}: removed"
                stats.removed += 1
        report(problem)


def _is_device(mode: int) -> bool:
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


def verify_index(index: Index, location: str, *, workers: int = 1,
                 progress: Progress = no_progress) -> None:
    """Raise InvalidFormat naming the first chunk (in index order) the file does not match."""
    digest = digest_function(index.digest)
    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError as exc:
        raise DesyncRefError(f"cannot open {location}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not _is_device(info.st_mode) and info.st_size != index.length:
            raise InvalidFormat(
                f"index size ({index.length}) does not match file size ({info.st_size}) "
                f"of {location}"
            )

        zero_ids = ZeroIds(index.digest)

        def check(chunk: IndexChunk) -> tuple[IndexChunk, bytes | None]:
            if in_hole(fd, chunk, info.st_size):  # zeros, known without reading them
                actual = zero_ids(chunk.size)
                return chunk, (None if actual == chunk.id else actual)
            data = os.pread(fd, chunk.size, chunk.start)
            actual = digest(data)
            return chunk, (None if len(data) == chunk.size and actual == chunk.id else actual)

        # closing() stops the workers before the descriptor they read is closed.
        bar = progress("Verifying", len(index.chunks))
        with closing(bar), closing(ordered_map(check, index.chunks, workers)) as results:
            for number, (chunk, actual) in enumerate(results):
                bar.update(1)
                if actual is None:
                    continue
                raise ChunkInvalid(
                    f"{location} does not match the index: chunk {number} "
                    f"(offset {chunk.start}, size {chunk.size}) should be {chunk.id.hex()} "
                    f"but hashes to {actual.hex()}"
                )
    finally:
        os.close(fd)
