"""formats/catar.py, formats/catar_decoder.py and formats/goodbye.py: SipHash, BST layout,
decoder checks through the pull loop (spec/catar.md). Byte-level decoder cases are in
tests/test_catar_decoder.py."""

from __future__ import annotations

import io
import stat
import struct

import pytest

from desync_ref.errors import InvalidFormat
from desync_ref.formats.catar import CatarWriter, Entry
from desync_ref.formats.catar_decoder import (
    EndOfArchive,
    EntryEvent,
    FileEndEvent,
    GoodbyeEvent,
    PayloadEvent,
    iter_events,
)
from desync_ref.formats.constants import CA_FORMAT_FILENAME
from desync_ref.formats.goodbye import GoodbyeItem, make_bst, siphash24

FLAGS = 0xB000000010001F22


def test_siphash_reference_vectors() -> None:
    key = bytes(range(16))
    assert siphash24(b"", key) == 0x726FDB47DD0E0E31
    assert siphash24(bytes(range(15)), key) == 0xA129CA6149BE45E5


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 300])
def test_bst_is_a_search_tree(n: int) -> None:
    items = [GoodbyeItem(1000 - i, 1, h) for i, h in enumerate(range(n * 7, 0, -7))]
    tree = make_bst(items)
    assert sorted(t.hash for t in tree) == sorted(i.hash for i in items)
    for i, item in enumerate(tree):
        if 2 * i + 1 < n:
            assert tree[2 * i + 1].hash < item.hash
        if 2 * i + 2 < n:
            assert tree[2 * i + 2].hash > item.hash


def sample() -> bytes:
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    for name in (b"a", b"b"):
        w.begin_child(name)
        w.entry(Entry(FLAGS, stat.S_IFREG | 0o644, size=3))
        w.payload(b"abc")
        w.end_child()
    w.begin_child(b"c")
    w.entry(Entry(FLAGS, stat.S_IFIFO | 0o644))
    w.end_child()
    w.end_dir()
    return out.getvalue()


def events(data: bytes) -> list[object]:
    return list(iter_events(io.BytesIO(data).read))


def test_round_trip_events() -> None:
    evs = events(sample())
    kinds = [type(e).__name__ for e in evs]
    assert kinds == ["EntryEvent", "EntryEvent", "PayloadEvent", "FileEndEvent", "EntryEvent",
                     "PayloadEvent", "FileEndEvent", "EntryEvent", "GoodbyeEvent", "EndOfArchive"]
    assert isinstance(evs[0], EntryEvent) and evs[0].name is None and evs[0].depth == 0
    assert isinstance(evs[1], EntryEvent) and evs[1].name == b"a" and evs[1].depth == 1
    assert isinstance(evs[2], PayloadEvent) and evs[2].data == b"abc"
    assert isinstance(evs[3], FileEndEvent) and isinstance(evs[-1], EndOfArchive)
    assert isinstance(evs[7], EntryEvent) and evs[7].name == b"c"
    assert stat.S_ISFIFO(evs[7].entry.mode)
    assert isinstance(evs[-2], GoodbyeEvent) and evs[-2].depth == 0


@pytest.mark.parametrize("cut", [1, 15, 16, 63, 64, 100, -1, -24])
def test_truncated(cut: int) -> None:
    with pytest.raises(InvalidFormat):
        events(sample()[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(InvalidFormat, match="trailing"):
        events(sample() + b"\0" * 16)


def test_wrong_magic() -> None:
    data = bytearray(sample())
    data[8] ^= 1
    with pytest.raises(InvalidFormat, match="ENTRY"):
        events(bytes(data))


def test_goodbye_mismatch() -> None:
    data = bytearray(sample())
    data[-30] ^= 0xFF  # inside the goodbye items
    with pytest.raises(InvalidFormat, match="GOODBYE"):
        events(bytes(data))


def _rename(data: bytes, old: bytes, new: bytes) -> bytes:
    rec = struct.pack("<2Q", 16 + len(old) + 1, CA_FORMAT_FILENAME) + old + b"\0"
    assert data.count(rec) == 1 and len(new) == len(old)
    return data.replace(rec, struct.pack("<2Q", 16 + len(new) + 1, CA_FORMAT_FILENAME) + new + b"\0")


@pytest.mark.parametrize("bad", [b"/", b".", b"\0"])
def test_bad_names(bad: bytes) -> None:
    with pytest.raises(InvalidFormat):
        events(_rename(sample(), b"b", bad))


def test_names_out_of_order() -> None:
    with pytest.raises(InvalidFormat, match="order"):
        events(_rename(sample(), b"b", b"a"))


def test_absurd_sizes_do_not_allocate() -> None:
    data = bytearray(sample())
    # FILENAME of the first child with size 2**63: refused before reading
    at = data.index(struct.pack("<Q", CA_FORMAT_FILENAME)) - 8
    data[at:at + 8] = struct.pack("<Q", 1 << 63)
    with pytest.raises(InvalidFormat, match="size"):
        events(bytes(data))
    # a payload claiming 2**62 bytes: truncated, read in bounded blocks
    data = bytearray(sample())
    at = data.index(struct.pack("<Q", 0x8B9E1D93D6DCFFC9)) - 8
    data[at:at + 8] = struct.pack("<Q", 1 << 62)
    with pytest.raises(InvalidFormat, match="truncated"):
        events(bytes(data))


def test_writer_refuses_bad_names() -> None:
    w = CatarWriter(io.BytesIO().write)
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    for bad in (b"", b"..", b"a/b", b"x" * 256):
        with pytest.raises(InvalidFormat):
            w.begin_child(bad)
