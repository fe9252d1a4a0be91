"""tar: serialize a directory (or a tar stream) into a catar, or chunk it into a caidx.

Spec: ``spec/catar.md`` § "Feature flags" (how ``--with``/``--without`` combine, as casync's
``load_feature_flags`` in ``src/casync-tool.c``) and § "Archive index". A caidx is the
index of the catar stream, with the archive's feature flags in its header: the writer's
bytes go straight into the chunker driver, one loop, so the catar is never held in memory
or on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from desync_ref.chunking import ChunkSizes
from desync_ref.formats import constants as c
from desync_ref.formats.catar import CatarWriter
from desync_ref.formats.chunk import DIGEST_SHA512_256
from desync_ref.formats.index import Index
from desync_ref.fs.walk import TreeEncoder
from desync_ref.operations.make import MakeStats, StreamIndexer
from desync_ref.progress import Progress, no_progress
from desync_ref.stores import WriteStore

# desync's TarFeatureFlags "with" part (tar.go): 32bit-uids, nsec-time, permissions,
# symlinks, device-nodes, fifos, sockets, xattrs.
DEFAULT_WITH: Final = 0x10001F22

Write = Callable[[bytes], object]


def archive_flags(with_bits: int = 0, without_bits: int = 0, *,
                  digest: str = DIGEST_SHA512_256, one_file_system: bool = False) -> int:
    """casync's ``combined_with_flags`` + ``load_feature_flags``: ``--with`` bits replace the
    default set, ``--without`` bits are removed, then the exclude and digest bits are added
    and the set is normalized."""
    flags = (with_bits or DEFAULT_WITH) & ~without_bits
    flags |= c.CA_FORMAT_EXCLUDE_NODUMP | c.CA_FORMAT_EXCLUDE_FILE
    if one_file_system:
        flags |= c.CA_FORMAT_EXCLUDE_SUBMOUNTS
    if digest == DIGEST_SHA512_256:
        flags |= c.CA_FORMAT_SHA512_256
    return c.feature_flags_normalize(flags)


def write_catar(source: str, write: Write, flags: int, *, no_time: bool = False) -> int:
    """Serialize the directory ``source``, handing the bytes to ``write``; returns the size."""
    writer = CatarWriter(write)
    TreeEncoder(writer, flags, no_time=no_time).encode(source)
    return writer.offset


def index_stream(produce: Callable[[Write], object], flags: int, sizes: ChunkSizes, *,
                 digest: str, store: WriteStore | None, workers: int,
                 progress: Progress = no_progress) -> tuple[Index, MakeStats]:
    """Chunk the catar that ``produce`` writes, as it writes it (storing new chunks);
    ``progress`` counts archive bytes (the total is not known in advance)."""
    indexer = StreamIndexer(sizes, digest=digest, store=store, workers=workers,
                            progress=progress, operation="Archiving")
    try:
        produce(indexer.feed)
    except BaseException:
        indexer.close()
        raise
    index, stats = indexer.finish()
    index.feature_flags = flags
    return index, stats
