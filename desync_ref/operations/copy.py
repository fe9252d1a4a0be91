"""cache: copy chunks from source stores into a target store (``desync cache``).

Spec: ``spec/store.md``. Behaviour of desync ``copy.go`` (``Copy``: chunks the target holds
are skipped, the first error ends the run). As in desync, every chunk is checked when the
source builds it (decompressed and hashed with its index's digest), so nothing invalid
reaches the target.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

from desync_ref.formats.chunk import digest_function
from desync_ref.operations.parallel import ordered_map
from desync_ref.progress import Progress, no_progress
from desync_ref.stores import Store, WriteStore


@dataclass
class CopyStats:
    chunks: int = 0
    copied: int = 0


def copy_chunks(ids: dict[bytes, str], source: Store, target: WriteStore, *,
                workers: int = 1, progress: Progress = no_progress) -> CopyStats:
    """Copy every chunk of ``ids`` (id -> digest name) that ``target`` does not hold yet."""
    stats = CopyStats()

    def copy_one(item: tuple[bytes, str]) -> bool:
        chunk_id, digest_name = item
        if target.has_chunk(chunk_id):
            return False
        target.store_chunk(source.get_chunk(chunk_id, digest_function(digest_name)))
        return True

    bar = progress("Caching", len(ids))
    with closing(bar), closing(ordered_map(copy_one, ids.items(), workers)) as results:
        for copied in results:
            stats.chunks += 1
            stats.copied += copied
            bar.update(1)
    return stats
