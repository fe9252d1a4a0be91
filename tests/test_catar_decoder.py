"""formats/catar_decoder.py at the byte level: malformed input, memory bounds, and events
that do not depend on how the input is split (spec/catar.md § "Decoding", § "Safety")."""

from __future__ import annotations

import io
import stat
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_ref.errors import InvalidFormat
from desync_ref.formats import constants as c
from desync_ref.formats.catar import HEADER, AclEntry, CatarWriter, Entry
from desync_ref.formats.catar_decoder import (
    NEED_DATA,
    PAYLOAD_BLOCK,
    CatarDecoder,
    EndOfArchive,
    EntryEvent,
    Event,
    FileEndEvent,
    GoodbyeEvent,
    NeedData,
    PayloadEvent,
)

FLAGS = c.feature_flags_normalize(0x10001F22 | c.CA_FORMAT_WITH_USER_NAMES | c.CA_FORMAT_WITH_ACL
                                  | c.CA_FORMAT_WITH_FCAPS | c.CA_FORMAT_SHA512_256)
DIR, REG = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644


def build() -> bytes:
    """A small archive with every kind of record: metadata lists, a payload, a symlink, a
    device, a fifo, a nested and an empty directory."""
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(FLAGS, DIR, user=b"root", group=b"wheel", uid=5, gid=6,
                  xattrs=[(b"user.a", b"1"), (b"user.b", b"")],
                  acl_user=[AclEntry(7, 6, b"u7")], acl_group_obj=4,
                  acl_default=(7, 5, 5, c.UINT64_MAX), acl_default_group=[AclEntry(8, 4)]))
    w.begin_child(b"dev")
    w.entry(Entry(FLAGS, stat.S_IFCHR | 0o600, rdev=(1, 3)))
    w.end_child()
    w.begin_child(b"empty")
    w.entry(Entry(FLAGS, DIR))
    w.end_dir()
    w.end_child()
    w.begin_child(b"file")
    w.entry(Entry(FLAGS, REG, size=5, fcaps=b"\x01\x02", selinux=b"label"))
    w.payload(b"hello")
    w.end_child()
    w.begin_child(b"link")
    w.entry(Entry(FLAGS, stat.S_IFLNK | 0o777, target=b"file"))
    w.end_child()
    w.begin_child(b"pipe")
    w.entry(Entry(FLAGS, stat.S_IFIFO | 0o644))
    w.end_child()
    w.begin_child(b"sub")
    w.entry(Entry(FLAGS, DIR))
    w.begin_child(b"x")
    w.entry(Entry(FLAGS, REG, size=0))
    w.end_child()
    w.end_dir()
    w.end_child()
    w.end_dir()
    return out.getvalue()


ARCHIVE = build()


def decode(pieces: list[bytes]) -> tuple[list[Event], str | None]:
    """Every event the decoder gives for ``pieces`` then end of input, and the error."""
    decoder = CatarDecoder()
    events: list[Event] = []
    try:
        for piece in [*pieces, b""]:
            decoder.receive_data(piece)
            while not isinstance(event := decoder.next_event(), NeedData):
                events.append(event)
                if isinstance(event, EndOfArchive):
                    return events, None
    except InvalidFormat as exc:
        return events, str(exc)
    raise AssertionError("the input ended without an event or error")


def records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, size, type) of each record, walking the headers (PAYLOAD bodies skipped)."""
    out, pos = [], 0
    while pos < len(data):
        size, kind = HEADER.unpack_from(data, pos)
        out.append((pos, size, kind))
        pos += size
    return out


RECORDS = records(ARCHIVE)


def test_whole_archive() -> None:
    events, error = decode([ARCHIVE])
    assert error is None
    names = [(e.depth, e.name) for e in events if isinstance(e, EntryEvent)]
    assert names == [(0, None), (1, b"dev"), (1, b"empty"), (1, b"file"), (1, b"link"),
                     (1, b"pipe"), (1, b"sub"), (2, b"x")]
    root = events[0]
    assert isinstance(root, EntryEvent)
    assert root.entry.user == b"root" and root.entry.xattrs == [(b"user.a", b"1"), (b"user.b", b"")]
    assert root.entry.acl_user == [AclEntry(7, 6, b"u7")] and root.entry.acl_group_obj == 4
    assert root.entry.acl_default_group == [AclEntry(8, 4, None)]
    by_name = {e.name: e.entry for e in events if isinstance(e, EntryEvent)}
    assert by_name[b"dev"].rdev == (1, 3) and by_name[b"link"].target == b"file"
    assert by_name[b"file"].fcaps == b"\x01\x02" and by_name[b"file"].selinux == b"label"
    assert [e.data for e in events if isinstance(e, PayloadEvent)] == [b"hello"]
    assert sum(isinstance(e, FileEndEvent) for e in events) == 2
    assert [e.depth for e in events if isinstance(e, GoodbyeEvent)] == [1, 1, 0]
    assert isinstance(events[-1], EndOfArchive)


def test_one_byte_at_a_time_equals_one_feed() -> None:
    whole = decode([ARCHIVE])
    assert decode([ARCHIVE[i:i + 1] for i in range(len(ARCHIVE))]) == whole


@settings(max_examples=200, deadline=None)
@given(splits=st.lists(st.integers(0, len(ARCHIVE)), max_size=40),
       cut=st.integers(0, len(ARCHIVE) + 20))
def test_any_split_equals_one_feed(splits: list[int], cut: int) -> None:
    # Also for truncated and trailing input: the same events, then the same error.
    data = ARCHIVE[:cut] + bytes(max(0, cut - len(ARCHIVE)))
    pieces, prev = [], 0
    for at in [*sorted(s for s in splits if s <= len(data)), len(data)]:
        pieces.append(data[prev:at])
        prev = at
    assert decode([p for p in pieces if p]) == decode([data] if data else [])


def test_truncated_everywhere() -> None:
    boundaries = {offset for offset, _, _ in RECORDS}
    assert len(boundaries) > 30
    whole, _ = decode([ARCHIVE])
    for cut in range(len(ARCHIVE)):
        events, error = decode([ARCHIVE[:cut]])
        expected = "archive is empty" if cut == 0 else f"archive is truncated at offset {cut}"
        assert error == expected, (cut, error)
        assert events == whole[:len(events)]  # what came before the cut was decoded as usual


@pytest.mark.parametrize("extra", [1, 15, 16, 64])
def test_trailing_bytes(extra: int) -> None:
    _, error = decode([ARCHIVE + bytes(extra)])
    if extra < HEADER.size:
        assert error == f"archive is truncated at offset {len(ARCHIVE) + extra}"
    else:
        assert error == f"trailing data after the archive at offset {len(ARCHIVE)}"


def _with_size(offset: int, size: int) -> bytes:
    data = bytearray(ARCHIVE)
    struct.pack_into("<Q", data, offset, size)
    return bytes(data)


def test_wrong_sizes_everywhere() -> None:
    """Every record's size field off by one either way, or zero, is refused."""
    for offset, size, kind in RECORDS:
        for bad in (size - 1, size + 1, 0, HEADER.size):
            if kind == c.CA_FORMAT_PAYLOAD and bad >= HEADER.size:
                continue  # another payload length is a valid record; what follows is not
            _, error = decode([_with_size(offset, bad)])
            assert error is not None, (offset, kind, bad)


def test_absurd_sizes_are_refused_before_their_body() -> None:
    for offset, _, kind in RECORDS:
        if kind == c.CA_FORMAT_PAYLOAD:
            continue
        data = _with_size(offset, 1 << 63)
        decoder = CatarDecoder()
        decoder.receive_data(data[:offset + HEADER.size])  # just the header: enough to refuse
        with pytest.raises(InvalidFormat, match="size"):
            while decoder.next_event() is not NEED_DATA:
                pass


def test_endless_payload_memory_stays_bounded() -> None:
    # A PAYLOAD that claims 2**62 bytes, fed 64 KiB at a time: blocks come out as they fill,
    # the decoder never holds more than one block plus one piece.
    offset = next(o for o, _, kind in RECORDS if kind == c.CA_FORMAT_PAYLOAD)
    decoder = CatarDecoder()
    decoder.receive_data(_with_size(offset, 1 << 62)[:offset + HEADER.size])
    got = 0
    piece = bytes(64 * 1024)
    for _ in range(200):  # 12.5 MiB
        decoder.receive_data(piece)
        while not isinstance(event := decoder.next_event(), NeedData):
            if isinstance(event, PayloadEvent):
                assert len(event.data) == PAYLOAD_BLOCK
                got += len(event.data)
        assert decoder.buffered < PAYLOAD_BLOCK + len(piece)
    assert got == 12 * PAYLOAD_BLOCK
    decoder.receive_data(b"")
    with pytest.raises(InvalidFormat, match="truncated"):
        while True:
            decoder.next_event()


def _filename_record(name: bytes) -> bytes:
    return struct.pack("<2Q", HEADER.size + len(name) + 1, c.CA_FORMAT_FILENAME) + name + b"\0"


@pytest.mark.parametrize(("bad", "message"), [
    (b"a/b", "invalid file name"), (b"..", "invalid file name"), (b".", "invalid file name"),
    (b"/", "invalid file name"), (b"a\0", "FILENAME is not a NUL-terminated string"),
    (b"", "FILENAME is not a NUL-terminated string"), (b"x" * 256, "invalid size"),
])
def test_bad_names(bad: bytes, message: str) -> None:
    # Replace the name "pipe" (a fifo: nothing else depends on the name's length).
    old = _filename_record(b"pipe")
    assert ARCHIVE.count(old) == 1
    _, error = decode([ARCHIVE.replace(old, _filename_record(bad))])
    assert error is not None and message in error


def test_names_out_of_order_and_duplicate() -> None:
    for new in (b"file", b"aaaa"):
        _, error = decode([ARCHIVE.replace(_filename_record(b"link"), _filename_record(new))])
        assert error is not None and "out of order" in error


def _goodbye_offsets() -> list[tuple[int, int]]:
    return [(o, s) for o, s, kind in RECORDS if kind == c.CA_FORMAT_GOODBYE]


def test_bad_goodbye() -> None:
    for offset, size in _goodbye_offsets():
        for field in range(HEADER.size, size, 8):  # every item field and the tail
            data = bytearray(ARCHIVE)
            data[offset + field] ^= 1
            _, error = decode([bytes(data)])
            assert error == f"GOODBYE record at offset {offset} does not match its directory"
        _, error = decode([_with_size(offset, size + 24)])
        assert error == f"GOODBYE record has size {size + 24}, expected {size}"


def test_goodbye_items_in_any_order_are_accepted() -> None:
    # old desync archives do not lay the items out as a BST; the set is what is checked
    offset, size = _goodbye_offsets()[-1]
    items = [ARCHIVE[offset + HEADER.size + 24 * i:offset + HEADER.size + 24 * (i + 1)]
             for i in range((size - HEADER.size) // 24 - 1)]
    data = (ARCHIVE[:offset + HEADER.size] + b"".join(reversed(items))
            + ARCHIVE[offset + HEADER.size + 24 * len(items):])
    assert data != ARCHIVE and decode([data]) == decode([ARCHIVE])


def test_huge_mode_is_a_format_error() -> None:
    data = bytearray(ARCHIVE)
    struct.pack_into("<Q", data, 24, 1 << 63)  # mode of the root ENTRY
    _, error = decode([bytes(data)])
    assert error == f"ENTRY at offset 0 has an invalid mode 0o{1 << 63:o}"


def test_metadata_out_of_order() -> None:
    # swap USER and GROUP of the root entry
    user = next(o for o, _, k in RECORDS if k == c.CA_FORMAT_USER)
    group = next(o for o, _, k in RECORDS if k == c.CA_FORMAT_GROUP)
    usize = HEADER.unpack_from(ARCHIVE, user)[0]
    gsize = HEADER.unpack_from(ARCHIVE, group)[0]
    data = (ARCHIVE[:user] + ARCHIVE[group:group + gsize] + ARCHIVE[user:user + usize]
            + ARCHIVE[group + gsize:])
    _, error = decode([data])
    assert error == f"record 0x{c.CA_FORMAT_USER:016x} out of order in entry at 0"


def test_root_fifo_then_data_is_trailing() -> None:
    fifo = Entry(FLAGS, stat.S_IFIFO | 0o644)
    out = io.BytesIO()
    CatarWriter(out.write).entry(fifo)
    events, error = decode([out.getvalue()])
    assert error is None and [type(e) for e in events] == [EntryEvent, EndOfArchive]
    _, error = decode([out.getvalue() + ARCHIVE])
    assert error == f"trailing data after the archive at offset {len(out.getvalue())}"


def test_dead_after_error_and_no_data_after_end() -> None:
    decoder = CatarDecoder()
    decoder.receive_data(b"\0" * 16)
    with pytest.raises(InvalidFormat, match="expected an ENTRY"):
        decoder.next_event()
    with pytest.raises(InvalidFormat, match="expected an ENTRY"):
        decoder.next_event()
    decoder = CatarDecoder()
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"x")
