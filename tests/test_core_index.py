"""The index format: exact round trips and every malformation a reader must refuse."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from desync_ref.errors import InvalidFormat
from desync_ref.formats.constants import CA_FORMAT_WITH_16BIT_UIDS, CA_FORMAT_WITH_32BIT_UIDS
from desync_ref.formats.index import (
    INDEX_HEADER_SIZE,
    TABLE_HEADER_SIZE,
    TABLE_ITEM_SIZE,
    Index,
    IndexChunk,
    encode_index,
    parse_index,
)


def sample_index() -> Index:
    chunks = [IndexChunk(0, 100, bytes([1]) * 32), IndexChunk(100, 50, bytes([2]) * 32)]
    return Index(0xB000000000000000, 16, 64, 256, chunks)


def test_peer_index_round_trips_byte_for_byte(peer: Path) -> None:
    raw = (peer / "testdata" / "index.caibx").read_bytes()
    index = parse_index(raw)
    assert [(c.start, c.size, c.id.hex()[:8]) for c in index.chunks] == [
        (0, 242168, "437884da"), (242168, 75740, "985462e6"), (317908, 20012, "fadff4b3")
    ]
    assert encode_index(index) == raw


def test_empty_index_has_header_table_and_tail_only() -> None:
    raw = encode_index(Index(0xB000000000000000, 16384, 65536, 262144))
    assert len(raw) == 48 + 16 + 40
    assert parse_index(raw).chunks == []


def _corrupt(raw: bytes, offset: int, value: int) -> bytes:
    return raw[:offset] + struct.pack("<Q", value) + raw[offset + 8:]


@pytest.mark.parametrize(
    ("name", "mangle"),
    [
        ("truncated", lambda raw: raw[:-1]),
        ("header only", lambda raw: raw[:48]),
        ("trailing bytes", lambda raw: raw + b"\0" * 40),
        ("one trailing byte", lambda raw: raw + b"\0"),
        ("wrong magic", lambda raw: _corrupt(raw, 8, 0x1234)),
        ("wrong header size", lambda raw: _corrupt(raw, 0, 56)),
        ("unknown flag bit", lambda raw: _corrupt(raw, 16, 0xB000000000000000 | 1 << 40)),
        ("unnormalized flags", lambda raw: _corrupt(raw, 16, CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS)),
        ("min above avg", lambda raw: _corrupt(raw, 24, 100)),
        ("zero min", lambda raw: _corrupt(raw, 24, 0)),
        ("table size", lambda raw: _corrupt(raw, 48, 0)),
        ("table magic", lambda raw: _corrupt(raw, 56, 0)),
        ("tail marker", lambda raw: _corrupt(raw, len(raw) - 8, 0)),
        ("tail size", lambda raw: _corrupt(raw, len(raw) - 16, 5)),
        ("tail index offset", lambda raw: _corrupt(raw, len(raw) - 24, 0)),
        ("tail zero fill", lambda raw: _corrupt(raw, len(raw) - 40, 7)),
        ("offsets not increasing", lambda raw: _corrupt(raw, 64 + 40, 100)),
        ("chunk larger than max", lambda raw: _corrupt(raw, 64 + 40, 100 + 257)),
    ],
)
def test_malformed_index_is_refused(name: str, mangle: object) -> None:
    raw = encode_index(sample_index())
    assert parse_index(raw) == sample_index()
    with pytest.raises(InvalidFormat):
        parse_index(mangle(raw))  # type: ignore[operator]


def test_layout_offsets() -> None:
    raw = encode_index(sample_index())
    first_item = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    assert struct.unpack_from("<Q", raw, first_item)[0] == 100
    assert struct.unpack_from("<Q", raw, first_item + TABLE_ITEM_SIZE)[0] == 150
    assert raw[first_item + 8:first_item + 40] == bytes([1]) * 32


def _table(sizes: list[int], cmax: int = 256) -> bytes:
    chunks, start = [], 0
    for n, size in enumerate(sizes):
        chunks.append(IndexChunk(start, size, bytes([n]) * 32))
        start += size
    return encode_index(Index(0xB000000000000000, 16, 64, cmax, chunks))


def test_entries_are_the_table_walked_item_by_item() -> None:
    """Every entry's start, size, end and id as the raw table says, including a chunk of
    exactly the max size, first and last."""
    sizes = [256, 17, 256, 100, 1, 255, 256]
    raw = _table(sizes)
    index = parse_index(raw)
    start, at = 0, INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    for chunk in index.chunks:
        end, chunk_id = struct.unpack_from("<Q32s", raw, at)
        assert (chunk.start, chunk.size, chunk.end, chunk.id) == (start, end - start, end, chunk_id)
        start, at = end, at + TABLE_ITEM_SIZE
    assert [c.size for c in index.chunks] == sizes and index.length == sum(sizes)
    assert encode_index(index) == raw


@pytest.mark.parametrize(("damage", "message"), [
    # (item, new end offset): only the first damaged item, in table order, is named.
    ([(6, 2000)], "index table item 6: chunk of 1371 bytes exceeds max 256"),
    ([(3, 100)], "index table item 3: offset 100 is not increasing"),
    ([(5, 400), (2, 400)], "index table item 2: chunk of 383 bytes exceeds max 256"),
    ([(4, 300), (1, 5)], "index table item 1: offset 5 is not increasing"),
    ([(0, 0)], "index table item 0: offset 0 is not increasing"),
])
def test_the_first_damaged_item_is_named(damage: list[tuple[int, int]], message: str) -> None:
    raw = _table([10, 7, 256, 100, 1, 255, 200])
    for item, end in damage:
        raw = _corrupt(raw, INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + item * TABLE_ITEM_SIZE, end)
    with pytest.raises(InvalidFormat) as caught:
        parse_index(raw)
    assert str(caught.value) == message


def test_reading_an_index_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    """read_index holds the cyclic collector off while it parses: afterwards it is on again
    (also when the index is refused), and one that was off stays off."""
    import gc

    from desync_ref.operations.files import read_index

    good, bad = tmp_path / "good.caibx", tmp_path / "bad.caibx"
    good.write_bytes(encode_index(sample_index()))
    bad.write_bytes(_corrupt(encode_index(sample_index()), 64 + 40, 100))
    was = gc.isenabled()
    try:
        gc.enable()
        assert read_index(str(good)) == sample_index()
        assert gc.isenabled()
        with pytest.raises(InvalidFormat, match="item 1: offset 100 is not increasing"):
            read_index(str(bad))
        assert gc.isenabled()
        gc.disable()
        assert read_index(str(good)) == sample_index()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
