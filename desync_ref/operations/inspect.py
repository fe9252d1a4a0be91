"""inspect-chunks: id, size and stored size of every chunk of an index.

Spec: ``spec/index.md``, ``spec/store.md``. Behaviour of desync
``cmd/desync/inspectchunks.go``: one entry per index row (repeats included); the size of
the chunk file is reported only when the store converts chunks (compresses them) and holds
the chunk, otherwise ``compressed_size`` is left out.
"""

from __future__ import annotations

from desync_ref.formats.index import Index
from desync_ref.operations.info import ChunkInfo
from desync_ref.stores.local import LocalStore


def inspect_chunks(index: Index, store: LocalStore | None = None) -> list[ChunkInfo]:
    converted = store is not None and bool(store.suffix)  # compressed or encrypted
    sizes: dict[bytes, int] = {}
    infos: list[ChunkInfo] = []
    for chunk in index.chunks:
        stored = 0
        if converted and store is not None:
            if chunk.id not in sizes:
                try:
                    sizes[chunk.id] = store.chunk_path(chunk.id).stat().st_size
                except OSError:
                    sizes[chunk.id] = 0
            stored = sizes[chunk.id]
        infos.append(ChunkInfo(chunk.id, chunk.size, stored))
    return infos
