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
import hashlib
import lzma
import re
import string
import zlib
from collections.abc import Callable
from typing import Final

import zstandard

from desync_ref.errors import ChunkInvalid, InvalidParameter
from desync_ref.formats.constants import (
    CA_CHUNK_ID_SIZE,
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_SHA512_256,
)

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

DIGEST_SHA512_256: Final = "sha512-256"
DIGEST_SHA256: Final = "sha256"
DIGESTS: Final = (DIGEST_SHA512_256, DIGEST_SHA256)

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
    # A ZstdCompressor is not safe to share across threads; one per call is cheap.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False).compress(data)


# Decompressed chunks never exceed casync's hard limit.
MAX_DECOMPRESSED_SIZE: Final = CA_CHUNK_SIZE_LIMIT_MAX

# casync picks the decoder from the leading bytes (compressor.c, detect_compression).
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
GZIP_MAGIC: Final = b"\x1f\x8b"


def decompress(blob: bytes, chunk_id: bytes | None = None, limit: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Decode one whole compressed chunk (zstd, or casync's optional xz/gzip).

    casync's zstd frames carry no content size, so frames are streamed; data left over
    after the stream, a truncated stream or more than ``limit`` bytes make it invalid.
    """
    what = f"chunk {chunk_id.hex()}" if chunk_id else "chunk"
    try:
        if blob.startswith(ZSTD_MAGIC):
            zobj = zstandard.ZstdDecompressor().decompressobj()
            out = zobj.decompress(blob)
            complete, rest = zobj.eof, zobj.unused_data
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


def verify(chunk_id: bytes, data: bytes, digest: Digest) -> None:
    actual = digest(data)
    if actual != chunk_id:
        raise ChunkInvalid(f"chunk id {chunk_id.hex()} does not match its hash {actual.hex()}")
