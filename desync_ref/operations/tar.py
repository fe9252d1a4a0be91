"""tar: serialize a directory (or a tar stream) into a catar, or chunk it into a caidx.

Spec: ``spec/catar.md`` § "Feature flags" (how ``--with``/``--without`` combine, as casync's
``load_feature_flags`` in ``src/casync-tool.c``) and § "Archive index". A caidx is the
index of the catar stream, with the archive's feature flags in its header.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import BinaryIO, Final

from desync_ref.chunking import ChunkSizes
from desync_ref.errors import UsageError
from desync_ref.formats import constants as c
from desync_ref.formats.catar import CatarWriter
from desync_ref.formats.chunk import DIGEST_SHA512_256
from desync_ref.formats.index import Index
from desync_ref.fs.walk import TreeEncoder
from desync_ref.operations.make import MakeStats, make_index_from_stream
from desync_ref.stores import WriteStore

# desync's TarFeatureFlags "with" part (tar.go): 32bit-uids, nsec-time, permissions,
# symlinks, device-nodes, fifos, sockets, xattrs.
DEFAULT_WITH: Final = 0x10001F22
WRITE_BUFFER: Final = 1024 * 1024


def parse_flag_names(names: Iterable[str]) -> int:
    value = 0
    for name in names:
        for part in name.split(","):
            bit = c.FEATURE_FLAG_NAMES.get(part.strip())
            if bit is None:
                raise UsageError(f"unknown feature flag '{part}' (casync's names: "
                                 f"{', '.join(sorted(c.FEATURE_FLAG_NAMES))})")
            value |= bit
    return value


def archive_flags(with_names: Iterable[str] = (), without_names: Iterable[str] = (), *,
                  digest: str = DIGEST_SHA512_256, one_file_system: bool = False) -> int:
    """casync's ``combined_with_flags`` + ``load_feature_flags``: a --with list replaces the
    default set, --without removes, then the exclude and digest bits, then normalization."""
    with_bits = parse_flag_names(with_names)
    flags = (with_bits or DEFAULT_WITH) & ~parse_flag_names(without_names)
    flags |= c.CA_FORMAT_EXCLUDE_NODUMP | c.CA_FORMAT_EXCLUDE_FILE
    if one_file_system:
        flags |= c.CA_FORMAT_EXCLUDE_SUBMOUNTS
    if digest == DIGEST_SHA512_256:
        flags |= c.CA_FORMAT_SHA512_256
    return c.feature_flags_normalize(flags)


def write_catar(source: str, out: BinaryIO, flags: int, *, no_time: bool = False) -> int:
    """Serialize the directory ``source`` into ``out``; returns the archive size."""
    writer = CatarWriter(out.write)
    TreeEncoder(writer, flags, no_time=no_time).encode(source)
    return writer.offset


def index_stream(produce: Callable[[BinaryIO], object], flags: int, sizes: ChunkSizes, *,
                 digest: str, store: WriteStore | None, workers: int) -> tuple[Index, MakeStats]:
    """Chunk the catar that ``produce`` writes, streaming it through a pipe: the catar is
    never held in memory or on disk."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def producer() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=WRITE_BUFFER) as out:
                produce(out)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # handed to the consumer thread
            failure.append(exc)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=WRITE_BUFFER) as stream:
        try:
            index, stats = make_index_from_stream(stream, sizes, digest=digest, store=store,
                                                  workers=workers)
        finally:
            stream.close()
            thread.join()
    if failure:
        raise failure[0]
    index.feature_flags = flags
    return index, stats
