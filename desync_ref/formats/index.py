"""The casync index (``.caibx`` for blobs, ``.caidx`` for catar archives).

Spec: ``spec/index.md``. Layout from casync ``src/caformat.h`` (``CaFormatIndex``,
``CaFormatTable``, ``CaFormatTableItem``, ``CaFormatTableTail``); the checks a reader makes
follow ``src/caindex.c`` (``ca_index_read_head``, ``ca_index_read_chunk``) plus the
length check desync makes in ``index.go``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import repeat
from operator import itemgetter, sub
from typing import TYPE_CHECKING, BinaryIO, Final, NamedTuple, cast

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
from desync_ref.value_class import FieldsEqual

# The dump's records (formats/records.py) are loaded only when damage is found or a dump
# asks for them: reading a valid index never needs them.
if TYPE_CHECKING:
    from desync_ref.formats.records import Damage, Record

INDEX_HEADER_SIZE: Final = 48  # sizeof(CaFormatIndex)
TABLE_HEADER_SIZE: Final = 16  # offsetof(CaFormatTable, items)
TABLE_ITEM_SIZE: Final = 8 + CA_CHUNK_ID_SIZE  # sizeof(CaFormatTableItem)
TABLE_TAIL_SIZE: Final = 40  # sizeof(CaFormatTableTail)
_FIXED: Final = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + TABLE_TAIL_SIZE

_INDEX_HEADER = struct.Struct("<6Q")
_TABLE_HEADER = struct.Struct("<2Q")
_TABLE_ITEM = struct.Struct(f"<Q{CA_CHUNK_ID_SIZE}s")
_TABLE_TAIL = struct.Struct("<5Q")
# One field of every item, for parse_index's whole-table passes.
_ITEM_END = struct.Struct(f"<Q{CA_CHUNK_ID_SIZE}x")
_ITEM_ID = struct.Struct(f"<8x{CA_CHUNK_ID_SIZE}s")
_FIRST = itemgetter(0)


class IndexChunk(NamedTuple):
    """One table row, with its start made explicit (the file stores only end offsets).

    A named tuple rather than a frozen dataclass: equally immutable and hashable, but
    :func:`parse_index` can make thousands of them in one C-level ``map`` (a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``, which made
    reading an 8k-entry index take about twice as long)."""

    start: int
    size: int
    id: bytes

    @property
    def end(self) -> int:
        return self.start + self.size


class Index(FieldsEqual):
    """The header's values and the entries. A plain class with a dataclass's constructor,
    equality and repr: a dataclass is made at import by compiling generated source, time
    every command that reads an index would pay at its start."""

    _FIELDS = ("feature_flags", "chunk_size_min", "chunk_size_avg", "chunk_size_max", "chunks")
    __slots__ = _FIELDS

    def __init__(self, feature_flags: int, chunk_size_min: int, chunk_size_avg: int,
                 chunk_size_max: int, chunks: list[IndexChunk] | None = None) -> None:
        self.feature_flags = feature_flags
        self.chunk_size_min = chunk_size_min
        self.chunk_size_avg = chunk_size_avg
        self.chunk_size_max = chunk_size_max
        self.chunks: list[IndexChunk] = [] if chunks is None else chunks

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


def _damage(offset: int, message: str, expected: str = "", found: str = "") -> Damage:
    from desync_ref.formats.records import Damage

    return Damage(offset, message, expected, found)


def _header_damage(data: bytes) -> Damage | None:
    """The INDEX object's checks, in casync's order (``ca_index_read_head``)."""
    size, kind, flags, cmin, cavg, cmax = _INDEX_HEADER.unpack_from(data, 0)
    if size != INDEX_HEADER_SIZE or kind != CA_FORMAT_INDEX:
        at, want, got = ((0, str(INDEX_HEADER_SIZE), str(size)) if size != INDEX_HEADER_SIZE
                         else (8, f"0x{CA_FORMAT_INDEX:016x}", f"0x{kind:016x}"))
        return _damage(at, "not a casync index (bad index header magic)", want, got)
    if not feature_flags_are_normalized(flags):
        return _damage(16, f"index has unknown or unnormalized feature flags 0x{flags:016x}",
                       "known, normalized feature flags", f"0x{flags:016x}")
    for at, name, value in ((24, "min", cmin), (32, "avg", cavg), (40, "max", cmax)):
        if not CA_CHUNK_SIZE_LIMIT_MIN <= value <= CA_CHUNK_SIZE_LIMIT_MAX:
            return _damage(at, f"index chunk size {name} {value} is out of range",
                           f"{CA_CHUNK_SIZE_LIMIT_MIN}..{CA_CHUNK_SIZE_LIMIT_MAX}", str(value))
    if not cmin <= cavg <= cmax:
        return _damage(24, f"index chunk sizes {cmin}:{cavg}:{cmax} are not ordered",
                       "min <= avg <= max", f"{cmin}:{cavg}:{cmax}")
    return None


def _table_header_damage(data: bytes) -> Damage | None:
    table_size, table_kind = _TABLE_HEADER.unpack_from(data, INDEX_HEADER_SIZE)
    if table_size != UINT64_MAX:
        return _damage(INDEX_HEADER_SIZE, "index has a bad table header", f"0x{UINT64_MAX:x}",
                       f"0x{table_size:x}")
    if table_kind != CA_FORMAT_TABLE:
        return _damage(INDEX_HEADER_SIZE + 8, "index has a bad table header",
                       f"0x{CA_FORMAT_TABLE:016x}", f"0x{table_kind:016x}")
    return None


def _size_damage(data: bytes) -> Damage | None:
    """The table must be whole items and a tail: its bytes say where the damage starts."""
    body = len(data) - _FIXED
    if not body % TABLE_ITEM_SIZE:
        return None
    at = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + body // TABLE_ITEM_SIZE * TABLE_ITEM_SIZE
    return _damage(at, f"index size {len(data)} does not fit header, whole table items and tail "
                       "(truncated or trailing bytes)",
                   f"a {TABLE_TAIL_SIZE}-byte table tail", f"{len(data) - at} bytes")


def _tail_damage(data: bytes, count: int, at: int | None = None) -> Damage | None:
    """The tail's checks; ``at`` is where it lies (by default the last 40 bytes)."""
    at = len(data) - TABLE_TAIL_SIZE if at is None else at
    zero1, zero2, index_offset, tail_size, marker = _TABLE_TAIL.unpack_from(data, at)
    expected_table = TABLE_HEADER_SIZE + count * TABLE_ITEM_SIZE + TABLE_TAIL_SIZE
    for field_at, want, got in ((32, CA_FORMAT_TABLE_TAIL_MARKER, marker), (0, 0, zero1),
                                (8, 0, zero2), (16, INDEX_HEADER_SIZE, index_offset),
                                (24, expected_table, tail_size)):
        if want != got:
            return _damage(at + field_at, "index has a bad table tail (truncated or trailing bytes?)",
                           f"0x{want:x}", f"0x{got:x}")
    return None


def _item_damage(n: int, at: int, start: int, end: int, cmax: int) -> Damage | None:
    if end <= start:
        return _damage(at, f"index table item {n}: offset {end} is not increasing",
                       f"an end offset above {start}", str(end))
    if end - start > cmax:
        return _damage(at, f"index table item {n}: chunk of {end - start} bytes exceeds max {cmax}",
                       f"at most {cmax} bytes", f"{end - start} bytes")
    return None


def parse_index(data: bytes) -> Index:
    """Decode and validate a whole index; every inconsistency raises InvalidFormat."""
    if len(data) < _FIXED:
        raise InvalidFormat(f"index is truncated ({len(data)} bytes, at least {_FIXED} needed)")
    _, _, flags, cmin, cavg, cmax = _INDEX_HEADER.unpack_from(data, 0)
    count = (len(data) - _FIXED) // TABLE_ITEM_SIZE
    for damage in (_header_damage(data), _table_header_damage(data), _size_damage(data),
                   _tail_damage(data, count)):
        if damage is not None:
            raise InvalidFormat(damage.message)
    if not count:
        return Index(flags, cmin, cavg, cmax, [])
    # The whole table in C-level passes: the ends, then the ids; starts are the ends shifted
    # by one, sizes their differences; only a table that fails the checks is walked item by
    # item, to name the first bad item as casync (reading them in order) would.
    table = memoryview(data)[INDEX_HEADER_SIZE + TABLE_HEADER_SIZE:][:count * TABLE_ITEM_SIZE]
    ends = list(map(_FIRST, _ITEM_END.iter_unpack(table)))
    ids = map(_FIRST, _ITEM_ID.iter_unpack(table))
    starts = [0]
    starts += ends[:-1]
    sizes = list(map(sub, ends, starts))
    if min(sizes) <= 0 or max(sizes) > cmax:
        damage = _first_item_damage(data, count, cmax)
        if damage is not None:
            raise InvalidFormat(damage.message)
    rows = zip(starts, sizes, ids, strict=True)
    return Index(flags, cmin, cavg, cmax,
                 cast("list[IndexChunk]", list(map(tuple.__new__, repeat(IndexChunk), rows))))


def _first_item_damage(data: bytes, count: int, cmax: int) -> Damage | None:
    """The first table item that fails its checks."""
    start = 0
    offset = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    for n in range(count):
        end, _ = _TABLE_ITEM.unpack_from(data, offset)
        damage = _item_damage(n, offset, start, end, cmax)
        if damage is not None:
            return damage
        offset += TABLE_ITEM_SIZE
        start = end
    return None


def scan_index(data: bytes) -> Iterator[Record | Damage]:
    """The tolerant reading of an index (``desync-ref dump``): its records in file order,
    each checked as :func:`parse_index` checks it, damage handed out as a value. A header
    that is not an index's, or bytes that end short of the next record, end the scan; a
    bad value is reported and the scan goes on."""
    from desync_ref.formats.records import FLAGS, ID, MAGIC, Field, Record, u64_fields

    if len(data) < INDEX_HEADER_SIZE:
        yield _damage(len(data), f"index is truncated ({len(data)} bytes, at least {_FIXED} needed)",
                      f"a {INDEX_HEADER_SIZE}-byte INDEX object", f"{len(data)} bytes")
        return
    yield Record(0, INDEX_HEADER_SIZE, "INDEX", u64_fields(
        data, 0, ("size", "type", "feature_flags", "chunk_size_min", "chunk_size_avg", "chunk_size_max"),
        {"type": MAGIC, "feature_flags": FLAGS}))
    damage = _header_damage(data)
    if damage is not None:
        yield damage
        if damage.offset < 16:
            return
    if len(data) < _FIXED:
        yield _damage(len(data), f"index is truncated ({len(data)} bytes, at least {_FIXED} needed)",
                      f"at least {_FIXED} bytes", f"{len(data)} bytes")
        return
    yield Record(INDEX_HEADER_SIZE, TABLE_HEADER_SIZE, "TABLE",
                 u64_fields(data, INDEX_HEADER_SIZE, ("size", "type"), {"size": MAGIC, "type": MAGIC}))
    damage = _table_header_damage(data)
    if damage is not None:
        yield damage
    # Items are walked as casync reads them, one after the other, until the one that begins
    # with the tail's zero fill (a real item's end offset is never 0); the strict parser
    # finds the tail by the file's length instead, and the two agree on every valid index.
    cmax = _INDEX_HEADER.unpack_from(data, 0)[5]
    start = 0
    offset = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    n = 0
    while offset + TABLE_ITEM_SIZE <= len(data):
        end, chunk_id = _TABLE_ITEM.unpack_from(data, offset)
        if end == 0:
            break
        yield Record(offset, TABLE_ITEM_SIZE, "TABLE_ITEM",
                     (Field("offset", offset, 8, end), Field("chunk_start", offset, 8, start),
                      Field("chunk_size", offset, 8, end - start),
                      Field("chunk", offset + 8, CA_CHUNK_ID_SIZE, chunk_id, ID)))
        damage = _item_damage(n, offset, start, end, cmax)
        if damage is not None:
            yield damage
            return
        offset += TABLE_ITEM_SIZE
        start = end
        n += 1
    size_problem = _size_damage(data)
    message = size_problem.message if size_problem is not None else ""
    left = len(data) - offset
    if left < TABLE_TAIL_SIZE:
        yield _damage(offset, message or "index has a bad table tail (truncated or trailing bytes?)",
                      f"a {TABLE_TAIL_SIZE}-byte table tail", f"{left} bytes")
        return
    yield Record(offset, TABLE_TAIL_SIZE, "TABLE_TAIL", u64_fields(
        data, offset, ("zero_fill1", "zero_fill2", "index_offset", "size", "marker"), {"marker": MAGIC}))
    damage = _tail_damage(data, n, offset)
    if damage is not None:
        yield damage
    if left > TABLE_TAIL_SIZE:
        yield _damage(offset + TABLE_TAIL_SIZE, message or "index has a bad table tail (truncated or trailing bytes?)",
                      "the end of the file", f"{left - TABLE_TAIL_SIZE} more bytes")
