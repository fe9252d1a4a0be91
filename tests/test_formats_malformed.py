"""Malformed indexes and chunks, byte by byte, in process: every one is refused with the
library's error type (InvalidFormat, ChunkInvalid), never a crash or a silent success."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import struct

import pytest

from desync_ref.errors import ChunkInvalid, InvalidFormat
from desync_ref.formats.chunk import compress, decompress
from desync_ref.formats.constants import (
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_SHA512_256,
)
from desync_ref.formats.index import (
    INDEX_HEADER_SIZE,
    TABLE_HEADER_SIZE,
    Index,
    IndexChunk,
    encode_index,
    parse_index,
)
from desync_ref.stores import Chunk

FLAGS = CA_FORMAT_SHA512_256
UNDEFINED_FLAG = next(1 << n for n in range(64) if not CA_FORMAT_FEATURE_FLAGS_MAX & (1 << n))


def small_index() -> bytes:
    chunks = [IndexChunk(0, 20, bytes([1]) * 32), IndexChunk(20, 30, bytes([2]) * 32),
              IndexChunk(50, 64, bytes([3]) * 32)]
    return encode_index(Index(FLAGS, 16, 32, 64, chunks))


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_the_small_index_parses() -> None:
    index = parse_index(small_index())
    assert [(c.start, c.size) for c in index.chunks] == [(0, 20), (20, 30), (50, 64)]


def test_index_truncated_at_every_offset() -> None:
    data = small_index()
    for length in range(len(data)):
        with pytest.raises(InvalidFormat):
            parse_index(data[:length])


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 40, b"\0" * 80])
def test_index_with_trailing_bytes(extra: bytes) -> None:
    with pytest.raises(InvalidFormat):
        parse_index(small_index() + extra)


@pytest.mark.parametrize(("offset", "value", "message"), [
    (0, 47, "bad index header magic"),  # header size
    (8, 0x1234, "bad index header magic"),  # header type
    (16, FLAGS | UNDEFINED_FLAG, "feature flags"),  # a flag casync does not define
    (24, 0, "chunk size min 0 is out of range"),
    (40, CA_CHUNK_SIZE_LIMIT_MAX + 1, "chunk size max"),
    (32, 100, "not ordered"),  # avg above max
    (INDEX_HEADER_SIZE, 7, "bad table header"),  # table size not UINT64_MAX
    (INDEX_HEADER_SIZE + 8, 7, "bad table header"),  # table type
])
def test_index_header_fields(offset: int, value: int, message: str) -> None:
    with pytest.raises(InvalidFormat, match=message):
        parse_index(patched(small_index(), offset, "<Q", value))


@pytest.mark.parametrize("tail_field", range(5))
def test_index_bad_table_tail(tail_field: int) -> None:
    data = small_index()
    offset = len(data) - 40 + 8 * tail_field
    (current,) = struct.unpack_from("<Q", data, offset)
    with pytest.raises(InvalidFormat, match="bad table tail"):
        parse_index(patched(data, offset, "<Q", current + 1))


def test_index_item_offsets() -> None:
    data = small_index()
    first_end = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE
    with pytest.raises(InvalidFormat, match="not increasing"):
        parse_index(patched(data, first_end + 40, "<Q", 20))  # second ends where the first does
    with pytest.raises(InvalidFormat, match="exceeds max"):
        parse_index(patched(data, first_end, "<Q", 65))  # a first chunk larger than max


# --- chunks -------------------------------------------------------------------------------------

PLAIN = bytes(range(256)) * 40 + b"tail"
CID = hashlib.new("sha512_256", PLAIN).digest()
FORMS = {
    "zstd": compress(PLAIN),
    "xz": lzma.compress(PLAIN, format=lzma.FORMAT_XZ),
    "gzip": gzip.compress(PLAIN),
}


@pytest.mark.parametrize("form", FORMS)
def test_compressed_chunk_round_trip(form: str) -> None:
    assert decompress(FORMS[form]) == PLAIN


@pytest.mark.parametrize("form", FORMS)
def test_compressed_chunk_truncated_at_every_offset(form: str) -> None:
    blob = FORMS[form]
    for length in range(len(blob)):
        with pytest.raises(ChunkInvalid):
            decompress(blob[:length], CID)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("extra", [b"\0", b"garbage", b"\x28\xb5\x2f\xfd"])
def test_compressed_chunk_with_trailing_data(form: str, extra: bytes) -> None:
    with pytest.raises(ChunkInvalid, match=r"truncated stream or trailing data|not valid compressed data"):
        decompress(FORMS[form] + extra, CID)


@pytest.mark.parametrize("blob", [b"", b"\0\0\0\0", b"BZh9", PLAIN])
def test_compressed_chunk_wrong_magic(blob: bytes) -> None:
    with pytest.raises(ChunkInvalid) as info:
        decompress(blob, CID)
    assert str(info.value) == f"chunk {CID.hex()} is not compressed with zstd, xz or gzip"


@pytest.mark.parametrize("form", FORMS)
def test_compressed_chunk_past_the_limit(form: str) -> None:
    with pytest.raises(ChunkInvalid) as info:
        decompress(FORMS[form], CID, limit=len(PLAIN) - 1)
    assert str(info.value) == f"chunk {CID.hex()} decompresses to more than {len(PLAIN) - 1} bytes"
    assert decompress(FORMS[form], CID, limit=len(PLAIN)) == PLAIN


def sha512_256(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


@pytest.mark.parametrize("form", FORMS)
def test_corrupt_byte_in_a_compressed_chunk(form: str) -> None:
    """Each flipped byte either breaks the stream or changes the bytes: the id check catches it.
    (gzip's header bytes 4-9, mtime, extra flags and OS, do not bear on the contents.)"""
    blob = FORMS[form]
    first = 10 if form == "gzip" else 0
    for position in range(first, len(blob), max(1, len(blob) // 64)):
        bad = bytearray(blob)
        bad[position] ^= 0xFF
        with pytest.raises(ChunkInvalid):
            Chunk.with_id(CID, sha512_256, compressed=bytes(bad))


def test_chunk_built_from_outside_bytes_is_checked() -> None:
    assert Chunk.with_id(CID, sha512_256, compressed=FORMS["xz"]).data() == PLAIN
    assert Chunk.with_id(CID, sha512_256, data=PLAIN).compressed() == FORMS["zstd"]
    wrong = hashlib.new("sha512_256", b"x").digest()
    with pytest.raises(ChunkInvalid) as info:
        Chunk.with_id(wrong, sha512_256, data=PLAIN)
    assert str(info.value) == f"chunk id {wrong.hex()} does not match its hash {CID.hex()}"
    # not checked when no digest is given (desync's skip-verify): the bytes pass as they are
    assert Chunk.with_id(wrong, None, data=PLAIN).data() == PLAIN
