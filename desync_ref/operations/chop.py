"""chop: store the chunks of a file, cut where its index says (``desync chop``).

Spec: ``spec/index.md`` (offsets), ``spec/store.md`` (chunk files). Behaviour of desync
``chop.go`` (``ChopFile``: ``NewChunkWithID``) and ``chunkstorage.go``: every chunk read
from the file is built with its id from the index and so checked before anything is written, chunks the store already holds are not
written again, and the first bad or short chunk ends the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass

from desync_ref.errors import ChunkInvalid, DesyncRefError
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import IndexChunk
from desync_ref.operations.parallel import ordered_map
from desync_ref.operations.sparse_chunks import ZeroIds, in_hole
from desync_ref.progress import Progress, no_progress
from desync_ref.stores import Chunk, WriteStore


@dataclass
class ChopStats:
    chunks: int = 0
    stored: int = 0


def chop(location: str, chunks: Iterable[IndexChunk], digest_name: str, store: WriteStore, *,
         workers: int = 1, progress: Progress = no_progress) -> ChopStats:
    """Store each distinct chunk of ``chunks``, read from the file at ``location``."""
    digest = digest_function(digest_name)
    todo: dict[bytes, IndexChunk] = {}
    for chunk in chunks:
        todo.setdefault(chunk.id, chunk)  # the first place a repeated chunk occurs
    stats = ChopStats()
    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError as exc:
        raise DesyncRefError(f"cannot open {location}: {exc.strerror}") from None

    length = os.fstat(fd).st_size
    zero_ids = ZeroIds(digest_name)

    def store_one(chunk: IndexChunk) -> bool:
        if in_hole(fd, chunk, length) and zero_ids(chunk.size) == chunk.id:
            # Zeros in a hole: the id is known, so nothing is read, and nothing is made
            # unless the store lacks the chunk.
            if store.has_chunk(chunk.id):
                return False
            store.store_chunk(Chunk.with_id(chunk.id, digest, data=bytes(chunk.size)))
            return True
        data = os.pread(fd, chunk.size, chunk.start)
        if len(data) != chunk.size:
            raise ChunkInvalid(
                f"{location} ends before chunk {chunk.id.hex()} "
                f"(offset {chunk.start}, size {chunk.size})"
            )
        try:
            checked = Chunk.with_id(chunk.id, digest, data=data)
        except ChunkInvalid as exc:
            raise ChunkInvalid(f"{location} at offset {chunk.start}: {exc}") from None
        if store.has_chunk(chunk.id):
            return False
        store.store_chunk(checked)
        return True

    bar = progress("Chopping", len(todo))
    try:
        with closing(ordered_map(store_one, todo.values(), workers)) as results:
            for stored in results:
                stats.chunks += 1
                stats.stored += stored
                bar.update(1)
    finally:
        bar.close()
        os.close(fd)
    return stats
