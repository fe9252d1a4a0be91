"""Chunks: ids, digests, zstd compression and the names of chunk files in a store.

Spec: ``spec/store.md``. Sources: casync ``src/cachunkid.c`` (id = digest of the
uncompressed bytes), ``src/compressor.c`` (zstd, streaming API), ``src/castore.c``
(``<first 4 hex>/<id>.cacnk``); desync ``chunk.go``, ``local.go`` (``nameFromID``),
``types.go`` (``chunkIDFromFilename``), ``httphandlerbase.go`` (``idFromPath``).

Chunk names have one grammar, here: :func:`chunk_file_name` builds ``xxxx/<id><suffix>``,
:func:`parse_chunk_path` and :func:`parse_id` read it back; the local store, the HTTP client
and the chunk-server all use these. casync marks a chunk known to be missing with a symlink
at the chunk's own name (``ca_chunk_file_mark_missing``, ``src/cachunk.c``), so a missing
marker has no name of its own: the local store tells it apart by opening with O_NOFOLLOW.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import lzma
import re
import string
import threading
import zlib
from collections.abc import Callable
from typing import Final

import zstandard

from desync_ref.errors import ChunkInvalid, InvalidParameter

# The digest names are defined in formats/constants.py (the CLI offers them without loading
# this module) and re-exported here, beside the digests themselves.
from desync_ref.formats.constants import (
    CA_CHUNK_ID_SIZE,
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_SHA512_256,
)
from desync_ref.formats.constants import DIGEST_SHA256 as DIGEST_SHA256
from desync_ref.formats.constants import DIGEST_SHA512_256 as DIGEST_SHA512_256
from desync_ref.formats.constants import DIGESTS as DIGESTS

COMPRESSED_CHUNK_SUFFIX: Final = ".cacnk"
# desync's extension for uncompressed chunks in a store (desync const.go, "UncompressedChunkExt").
UNCOMPRESSED_CHUNK_SUFFIX: Final = ""
ZSTD_LEVEL: Final = 3  # casync's compressor.c uses zstd's default level

# An id is written as hex, two digits per byte; its directory is the first four digits
# (casync ca_chunk_id_format_path, desync nameFromID).
CHUNK_ID_HEX_DIGITS: Final = 2 * CA_CHUNK_ID_SIZE
CHUNK_DIR_DIGITS: Final = 4
_HEX_DIGITS: Final = frozenset(string.hexdigits)

# Temporary files beside a chunk while it is written (spec/store.md "Temporary files"):
# desync's tempfile prefix (local.go, tmpChunkPrefix) and casync's "<id>.<random hex>.tmp"
# (castore.c, ca_store_put; the random number printed with %PRIx64).
TMP_CHUNK_PREFIX: Final = ".tmp-cacnk"
CASYNC_TMP_NAME: Final = re.compile(rf"[0-9a-f]{{{CHUNK_ID_HEX_DIGITS}}}\.[0-9a-f]{{1,16}}\.tmp")

Digest = Callable[[bytes], bytes]


# Copying a ready hash object skips OpenSSL's by-name lookup on every chunk.
_SHA512_256_PROTOTYPE: Final = hashlib.new("sha512_256")


def _sha512_256(data: bytes) -> bytes:
    h = _SHA512_256_PROTOTYPE.copy()
    h.update(data)
    return h.digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def digest_function(name: str) -> Digest:
    """The hash that turns a chunk's uncompressed bytes into its id."""
    if name == DIGEST_SHA512_256:
        return _sha512_256
    if name == DIGEST_SHA256:
        return _sha256
    raise InvalidParameter(f"unknown digest '{name}' (use sha512-256 or sha256)", parameter="digest")


def digest_from_flags(feature_flags: int) -> str:
    """An index names its digest with one bit: CA_FORMAT_SHA512_256 set or not."""
    return DIGEST_SHA512_256 if feature_flags & CA_FORMAT_SHA512_256 else DIGEST_SHA256


# --- names ---------------------------------------------------------------------------------

def is_id_hex(text: str) -> bool:
    """Exactly the hex digits of one id. Either case is read (desync decodes with Go's
    ``hex.DecodeString``); ids are always written in lowercase."""
    return len(text) == CHUNK_ID_HEX_DIGITS and all(ch in _HEX_DIGITS for ch in text)


def parse_id(text: str) -> bytes:
    if not is_id_hex(text):
        raise InvalidParameter(f"invalid chunk id '{text}'", parameter="chunk id")
    return bytes.fromhex(text)


def chunk_file_name(chunk_id: bytes, suffix: str = COMPRESSED_CHUNK_SUFFIX) -> str:
    """Path of a chunk relative to the store root: ``xxxx/<id>.cacnk``."""
    hex_id = chunk_id.hex()
    return f"{hex_id[:CHUNK_DIR_DIGITS]}/{hex_id}{suffix}"


class NameProblem(enum.Enum):
    """Why a path is not a chunk name, in the order the checks are made (desync ``idFromPath``)."""

    EXTENSION = "extension"  # does not end in the expected suffix
    EXTRA_EXTENSION = "extra extension"  # a further '.' before the suffix (another form)
    LAYOUT = "layout"  # not <root><xxxx>/<id><suffix>
    ID = "id"  # the id is not CHUNK_ID_HEX_DIGITS hex digits


def parse_chunk_path(path: str, suffix: str, root: str = "") -> bytes | NameProblem:
    """The id in ``<root><xxxx>/<id><suffix>``, or what is wrong with the path.

    ``root`` is ``"/"`` for a URL path, ``""`` for a path relative to a store directory.
    """
    if not path.endswith(suffix):
        return NameProblem.EXTENSION
    hex_id = id_text(path, suffix)
    if "." in hex_id:
        return NameProblem.EXTRA_EXTENSION
    if len(hex_id) < CHUNK_DIR_DIGITS or path != f"{root}{hex_id[:CHUNK_DIR_DIGITS]}/{hex_id}{suffix}":
        return NameProblem.LAYOUT
    if not is_id_hex(hex_id):
        return NameProblem.ID
    return bytes.fromhex(hex_id)


def id_text(path: str, suffix: str) -> str:
    """What stands where the id goes: the last path element without ``suffix``."""
    base = path.rsplit("/", 1)[-1]
    return base[: len(base) - len(suffix)] if suffix and base.endswith(suffix) else base


def is_temp_chunk_name(name: str) -> bool:
    """A file name desync or casync gives a chunk while writing it (never a chunk itself)."""
    return name.startswith(TMP_CHUNK_PREFIX) or CASYNC_TMP_NAME.fullmatch(name) is not None


# --- compression ---------------------------------------------------------------------------

def compress(data: bytes) -> bytes:
    """zstd at level 3 with no content size in the frame header, as casync writes it."""
    # A ZstdCompressor is not safe to share across threads, so each thread keeps its own:
    # making one per call (its workspace allocated and faulted in) doubled the cost of
    # compressing a 64 KiB chunk. One-shot compress() output does not depend on reuse.
    compressor: zstandard.ZstdCompressor | None = getattr(_THREAD, "compressor", None)
    if compressor is None:
        compressor = _THREAD.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL,
                                                                    write_content_size=False)
    return compressor.compress(data)


_THREAD = threading.local()


# Decompressed chunks never exceed casync's hard limit; a reader that knows the index's
# max chunk size passes that instead (ChunkCheck.limit).
MAX_DECOMPRESSED_SIZE: Final = CA_CHUNK_SIZE_LIMIT_MAX
# The most bytes a store may hold for one chunk, read before anything is decoded: the
# largest chunk grown by zstd's worst case (ZSTD_COMPRESSBOUND: n + n/256 + a little), with
# room for an encrypted form's nonce and tag. Every backend bounds its reads with it.
MAX_STORED_CHUNK_SIZE: Final = CA_CHUNK_SIZE_LIMIT_MAX + (CA_CHUNK_SIZE_LIMIT_MAX >> 8) + 4096

# casync picks the decoder from the leading bytes (compressor.c, detect_compression).
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
GZIP_MAGIC: Final = b"\x1f\x8b"

# zstd frame layout (RFC 8878, 3.1.1): blocks of a 3-byte little-endian header (bit 0 last
# block, bits 1-2 type, bits 3-23 size) and content; no block decodes to more than 128 KiB.
_ZSTD_BLOCK_HEADER: Final = 3
_ZSTD_BLOCK_RAW, _ZSTD_BLOCK_RLE = 0, 1
_ZSTD_BLOCK_MAX: Final = 128 * 1024
# The input is handed to the decoder in runs of blocks that decode to at most this much, so
# a frame that claims far more than the limit stops within this much past it.
_ZSTD_FEED_BOUND: Final = 1 << 20


def _zstd_feeds(blob: bytes, limit: int) -> list[int]:
    """Offsets at which to cut ``blob`` so that no piece decodes to more than about
    _ZSTD_FEED_BOUND bytes; none when the whole frame cannot decode to more than ``limit``
    (the usual case: one piece, no copy). A header that does not parse ends the walk: the
    decoder then sees the rest in one piece and reports it (a partial block decodes to no
    more than its own bytes)."""
    try:
        pos = zstandard.frame_header_size(blob)
    except zstandard.ZstdError:
        return []
    cuts: list[int] = []
    bound = total = 0
    while pos + _ZSTD_BLOCK_HEADER <= len(blob):
        header = int.from_bytes(blob[pos:pos + _ZSTD_BLOCK_HEADER], "little")
        kind, size = (header >> 1) & 3, header >> 3
        out = size if kind in (_ZSTD_BLOCK_RAW, _ZSTD_BLOCK_RLE) else _ZSTD_BLOCK_MAX
        if bound and bound + out > _ZSTD_FEED_BOUND:
            cuts.append(pos)
            bound = 0
        bound += out
        total += out
        if header & 1:  # the last block: the checksum and anything after go with it
            break
        pos += _ZSTD_BLOCK_HEADER + (1 if kind == _ZSTD_BLOCK_RLE else size)
    return cuts if total > limit else []


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor. Making one per chunk (its context allocated and
    faulted in) cost more than decoding a 64 KiB chunk; ``decompressobj()`` starts a new
    frame on the same context, and a thread finishes one chunk before it starts the next,
    so one per thread is never shared by two frames at once."""
    decompressor: zstandard.ZstdDecompressor | None = getattr(_THREAD, "decompressor", None)
    if decompressor is None:
        decompressor = _THREAD.decompressor = zstandard.ZstdDecompressor()
    return decompressor


@functools.cache
def _strict() -> dict[str, bool]:
    """zstandard 0.22 added ``decompress(allow_extra_data=...)``; before it, data after the
    frame is ignored (decompress_exact checks where the frame ends in any case). Tried on
    a frame of one raw block holding ``-`` (no compressor made at import: its workspace
    is megabytes to fault in)."""
    try:
        _decompressor().decompress(ZSTD_MAGIC + b"\x20\x01\x09\x00\x00-", allow_extra_data=False)
    except TypeError:
        return {}
    return {"allow_extra_data": False}


def _zstd_decompress(blob: bytes, limit: int, what: str) -> tuple[bytes, bool, bytes]:
    """(data, frame complete, bytes after the frame), never holding much more than
    ``limit`` bytes of output: a frame of a few KiB can claim gigabytes."""
    try:
        declared = zstandard.frame_content_size(blob)  # -1: not in the header (casync's frames)
    except zstandard.ZstdError:
        declared = -1  # a header cut short: the decoder reports it below
    if declared > limit:
        raise ChunkInvalid(f"{what} decompresses to more than {limit} bytes")
    zobj = _decompressor().decompressobj()
    view = memoryview(blob)
    pieces: list[bytes] = []
    total = 0
    begin = 0
    for end in [*_zstd_feeds(blob, limit), len(blob)]:
        piece = zobj.decompress(view[begin:end])
        begin = end
        total += len(piece)
        if total > limit:
            raise ChunkInvalid(f"{what} decompresses to more than {limit} bytes")
        pieces.append(piece)
        if zobj.eof:
            break
    rest = zobj.unused_data if zobj.eof else b""
    if begin < len(blob) and zobj.eof:
        rest += blob[begin:]
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return data, zobj.eof, rest


def decompress(blob: bytes, chunk_id: bytes | None = None, limit: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Decode one whole compressed chunk (zstd, or casync's optional xz/gzip).

    casync's zstd frames carry no content size, so frames are streamed; data left over
    after the stream, a truncated stream or more than ``limit`` bytes make it invalid.
    Decoding stops shortly past ``limit``, so memory stays near ``limit`` whatever the
    frame claims (casync ``ca_decompress`` refuses sizes past its limits too).
    """
    what = f"chunk {chunk_id.hex()}" if chunk_id else "chunk"
    try:
        if blob.startswith(ZSTD_MAGIC):
            out, complete, rest = _zstd_decompress(blob, limit, what)
        elif blob.startswith(XZ_MAGIC):
            xobj = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = xobj.decompress(blob, max_length=limit + 1)
            complete, rest = xobj.eof, xobj.unused_data
        elif blob.startswith(GZIP_MAGIC):
            gobj = zlib.decompressobj(wbits=31)
            out = gobj.decompress(blob, limit + 1)
            complete, rest = gobj.eof, gobj.unused_data
        else:
            raise ChunkInvalid(f"{what} is not compressed with zstd, xz or gzip")
    except (zstandard.ZstdError, lzma.LZMAError, zlib.error) as exc:
        raise ChunkInvalid(f"{what} is not valid compressed data: {exc}") from None
    if len(out) > limit:
        raise ChunkInvalid(f"{what} decompresses to more than {limit} bytes")
    if not complete or rest:
        raise ChunkInvalid(f"{what} is not valid compressed data: truncated stream or trailing data")
    return bytes(out)


def _zstd_frame_end(blob: bytes | memoryview) -> int:
    """Where the first zstd frame of ``blob`` ends by its own structure (header, blocks up
    to the last one, then the checksum when the header says there is one), or -1 when the
    walk runs off the end or the header does not parse."""
    try:
        pos = zstandard.frame_header_size(blob)
    except zstandard.ZstdError:
        return -1
    checksum = 4 if blob[4] & 4 else 0  # Content_Checksum_flag (RFC 8878, 3.1.1.1.1)
    while pos + _ZSTD_BLOCK_HEADER <= len(blob):
        header = int.from_bytes(blob[pos:pos + _ZSTD_BLOCK_HEADER], "little")
        pos += _ZSTD_BLOCK_HEADER + (1 if (header >> 1) & 3 == _ZSTD_BLOCK_RLE else header >> 3)
        if header & 1:
            return pos + checksum
    return -1


def decompress_exact(blob: bytes | memoryview, size: int) -> bytes | None:
    """The common case of :func:`decompress`, quickly: ``blob`` is one zstd frame, nothing
    after it, that decodes to exactly ``size`` bytes (casync's frames, which carry no content
    size, or a frame that declares ``size``). Nothing bigger than ``size`` is ever allocated.
    Anything else is None, and the caller asks :func:`decompress` for the verdict and its
    message: this never accepts what ``decompress`` refuses, and never raises."""
    if blob[:4] != ZSTD_MAGIC or _zstd_frame_end(blob) != len(blob):
        return None
    try:
        if zstandard.frame_content_size(blob) not in (-1, size):
            return None  # a declared size is allocated as declared: only this one
        data: bytes = _decompressor().decompress(blob, max_output_size=size, **_strict())
    except zstandard.ZstdError:
        return None
    return data if len(data) == size else None


# The zstd frames raw_frame_content takes (RFC 8878, 3.1.1.1): a Frame_Header_Descriptor
# with no checksum, no dictionary, the reserved and unused bits clear: casync's and our frames
# (FHD 0x00: a window, no content size) and those with a content size, single-segment or not.
_FHD_REFUSED_BITS: Final = 0x1F  # unused, reserved, checksum, dictionary
_FHD_SINGLE_SEGMENT: Final = 0x20
_FCS_FIELD_SIZE: Final = ((0, 2, 4, 8), (1, 2, 4, 8))  # [Single_Segment][FCS_flag]
# zstd refuses windows above 2**27 by default (ZSTD_WINDOWLOG_LIMIT_DEFAULT, zstd.h).
_ZSTD_WINDOW_LIMIT: Final = 1 << 27


def raw_frame_content(buffer: bytearray, length: int, size: int) -> int:
    """Where ``size`` bytes of content start in ``buffer[:length]`` when that is one zstd frame
    made only of raw (stored) blocks that adds up to exactly ``size`` bytes with nothing
    after it; -1 otherwise. Incompressible chunks (random data, compressed files) are stored
    so, and their content is then taken where it was read instead of being decoded into new
    memory: the blocks after the first are moved down over the block headers so that the
    content is contiguous (``buffer`` is changed then).

    Only a subset of what zstd decodes is taken (see _FHD_REFUSED_BITS; blocks no bigger than
    zstd's Block_Maximum_Size, min(window, 128 KiB)), so this never accepts a frame that
    :func:`decompress` refuses; anything else is -1 and goes to the decoder. There is no
    content checksum to skip: frames carrying one are not taken.
    """
    if length < 9 or buffer[:4] != ZSTD_MAGIC:
        return -1
    descriptor = buffer[4]
    if descriptor & _FHD_REFUSED_BITS:
        return -1
    single = descriptor & _FHD_SINGLE_SEGMENT
    pos = 5
    window = 0
    if not single:  # Window_Descriptor: exponent and mantissa (RFC 8878, 3.1.1.1.2)
        window_log = 10 + (buffer[5] >> 3)
        window = (1 << window_log) + ((1 << window_log) >> 3) * (buffer[5] & 7)
        pos = 6
    fcs_size = _FCS_FIELD_SIZE[1 if single else 0][descriptor >> 6]
    if fcs_size:
        declared = int.from_bytes(buffer[pos:pos + fcs_size], "little")
        if (declared + 256 if fcs_size == 2 else declared) != size:
            return -1
        pos += fcs_size
    if single:
        window = size  # a single segment's window is its content size
    if window > _ZSTD_WINDOW_LIMIT:
        return -1
    block_max = min(window, _ZSTD_BLOCK_MAX)
    start = end = pos  # content gathered so far: buffer[start:end]
    view = memoryview(buffer)
    while pos + _ZSTD_BLOCK_HEADER <= length:
        header = int.from_bytes(buffer[pos:pos + _ZSTD_BLOCK_HEADER], "little")
        block = header >> 3
        if (header >> 1) & 3 != _ZSTD_BLOCK_RAW or block > block_max:
            return -1
        pos += _ZSTD_BLOCK_HEADER
        if pos + block > length:
            return -1
        if start == end:  # the first block: its content stays where it is
            start = end = pos
        elif block:
            view[end:end + block] = view[pos:pos + block]  # memmove: the regions may overlap
        end += block
        pos += block
        if header & 1:
            return start if pos == length and end - start == size else -1
    return -1


class ChunkCheck:
    """A chunk's digest together with what its index says about it: the chunk's size and
    the index's max chunk size. It is a :data:`Digest` (calling it hashes), so it travels
    through every store wherever a digest does; :func:`check_chunk` uses the rest."""

    __slots__ = ("digest", "limit", "size")

    def __init__(self, digest: Digest, size: int, limit: int = MAX_DECOMPRESSED_SIZE) -> None:
        self.digest = digest
        self.size = size
        self.limit = max(limit, size)

    def __call__(self, data: bytes) -> bytes:
        return self.digest(data)


def decompress_limit(digest: Digest | None) -> int:
    """How far a chunk checked with ``digest`` may decompress."""
    return digest.limit if isinstance(digest, ChunkCheck) else MAX_DECOMPRESSED_SIZE


def verify(chunk_id: bytes, data: bytes, digest: Digest) -> None:
    """The bytes hash to the id; and, for a :class:`ChunkCheck`, have the index's size."""
    actual = digest(data)
    if actual != chunk_id:
        raise ChunkInvalid(f"chunk id {chunk_id.hex()} does not match its hash {actual.hex()}")
    if isinstance(digest, ChunkCheck):
        check_size(chunk_id, data, digest.size)


def check_size(chunk_id: bytes, data: bytes, size: int) -> None:
    """A chunk whose id matches but whose length differs from its index entry: the index
    contradicts itself (the id covers the bytes, so the entry's size is wrong)."""
    if len(data) != size:
        raise ChunkInvalid(f"chunk {chunk_id.hex()} has {len(data)} bytes, the index says {size}")
