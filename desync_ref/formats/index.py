"""The casync index (``.caibx`` for blobs, ``.caidx`` for catar archives).

Spec: ``spec/index.md``. Layout from casync ``src/caformat.h`` (``CaFormatIndex``,
``CaFormatTable``, ``CaFormatTableItem``, ``CaFormatTableTail``); the checks a reader makes
follow ``src/caindex.c`` (``ca_index_read_head``, ``ca_index_read_chunk``) plus the
length check desync makes in ``index.go``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from desync_ref.errors import InvalidFormat
from desync_ref.formats.chunk import digest_from_flags
from desync_ref.formats.constants import (
    CA_CHUNK_ID_SIZE,
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_CHUNK_SIZE_LIMIT_MIN,
    CA_FORMAT_INDEX,
    CA_FORMAT_TABLE,
    CA_FORMAT_TABLE_TAIL_MARKER,
    UINT64_MAX,
    feature_flags_are_normalized,
)

INDEX_HEADER_SIZE: Final = 48  # sizeof(CaFormatIndex)
TABLE_HEADER_SIZE: Final = 16  # offsetof(CaFormatTable, items)
TABLE_ITEM_SIZE: Final = 8 + CA_CHUNK_ID_SIZE  # sizeof(CaFormatTableItem)
TABLE_TAIL_SIZE: Final = 40  # sizeof(CaFormatTableTail)

_INDEX_HEADER = struct.Struct("<6Q")
_TABLE_HEADER = struct.Struct("<2Q")
_TABLE_ITEM = struct.Struct(f"<Q{CA_CHUNK_ID_SIZE}s")
_TABLE_TAIL = struct.Struct("<5Q")


@dataclass(frozen=True, slots=True)
class IndexChunk:
    """One table row, with its start made explicit (the file stores only end offsets)."""

    start: int
    size: int
    id: bytes

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(slots=True)
class Index:
    feature_flags: int
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int
    chunks: list[IndexChunk] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return digest_from_flags(self.feature_flags)

    @property
    def length(self) -> int:
        """Size of the blob (or catar) the index describes."""
        return self.chunks[-1].end if self.chunks else 0




def encode_index(index: Index) -> bytes:
    return b"".join(iter_index_bytes(index))


def iter_index_bytes(index: Index) -> Iterator[bytes]:
    yield _INDEX_HEADER.pack(
        INDEX_HEADER_SIZE,
        CA_FORMAT_INDEX,
        index.feature_flags,
        index.chunk_size_min,
        index.chunk_size_avg,
        index.chunk_size_max,
    )
    # casync writes the table size as UINT64_MAX because it streams the table out.
    yield _TABLE_HEADER.pack(UINT64_MAX, CA_FORMAT_TABLE)
    yield b"".join(_TABLE_ITEM.pack(c.end, c.id) for c in index.chunks)
    table_size = TABLE_HEADER_SIZE + len(index.chunks) * TABLE_ITEM_SIZE + TABLE_TAIL_SIZE
    yield _TABLE_TAIL.pack(0, 0, INDEX_HEADER_SIZE, table_size, CA_FORMAT_TABLE_TAIL_MARKER)


def write_index(index: Index, out: BinaryIO) -> None:
    for part in iter_index_bytes(index):
        out.write(part)


def parse_index(data: bytes) -> Index:
    """Decode and validate a whole index; every inconsistency raises InvalidFormat."""
    fixed = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + TABLE_TAIL_SIZE
    if len(data) < fixed:
        raise InvalidFormat(f"index is truncated ({len(data)} bytes, at least {fixed} needed)")
    size, kind, flags, cmin, cavg, cmax = _INDEX_HEADER.unpack_from(data, 0)
    if size != INDEX_HEADER_SIZE or kind != CA_FORMAT_INDEX:
        raise InvalidFormat("not a casync index (bad index header magic)")
    if not feature_flags_are_normalized(flags):
        raise InvalidFormat(f"index has unknown or unnormalized feature flags 0x{flags:016x}")
    for name, value in (("min", cmin), ("avg", cavg), ("max", cmax)):
        if not CA_CHUNK_SIZE_LIMIT_MIN <= value <= CA_CHUNK_SIZE_LIMIT_MAX:
            raise InvalidFormat(f"index chunk size {name} {value} is out of range")
    if not cmin <= cavg <= cmax:
        raise InvalidFormat(f"index chunk sizes {cmin}:{cavg}:{cmax} are not ordered")
    table_size, table_kind = _TABLE_HEADER.unpack_from(data, INDEX_HEADER_SIZE)
    if table_size != UINT64_MAX or table_kind != CA_FORMAT_TABLE:
        raise InvalidFormat("index has a bad table header")
    body = len(data) - fixed
    if body % TABLE_ITEM_SIZE:
        raise InvalidFormat(
            f"index size {len(data)} does not fit header, whole table items and tail "
            "(truncated or trailing bytes)"
        )
    count = body // TABLE_ITEM_SIZE
    zero1, zero2, index_offset, tail_size, marker = _TABLE_TAIL.unpack_from(
        data, len(data) - TABLE_TAIL_SIZE
    )
    expected_table = TABLE_HEADER_SIZE + count * TABLE_ITEM_SIZE + TABLE_TAIL_SIZE
    if (
        marker != CA_FORMAT_TABLE_TAIL_MARKER
        or zero1
        or zero2
        or index_offset != INDEX_HEADER_SIZE
        or tail_size != expected_table
    ):
        raise InvalidFormat("index has a bad table tail (truncated or trailing bytes?)")
    chunks: list[IndexChunk] = []
    start = 0
    offset = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    for n in range(count):
        end, chunk_id = _TABLE_ITEM.unpack_from(data, offset)
        offset += TABLE_ITEM_SIZE
        if end <= start:
            raise InvalidFormat(f"index table item {n}: offset {end} is not increasing")
        if end - start > cmax:
            raise InvalidFormat(
                f"index table item {n}: chunk of {end - start} bytes exceeds max {cmax}"
            )
        chunks.append(IndexChunk(start, end - start, chunk_id))
        start = end
    return Index(flags, cmin, cavg, cmax, chunks)
