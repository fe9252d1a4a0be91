"""Chunks: ids, digests, zstd compression and store file names.

Spec: ``spec/store.md``. Sources: casync ``src/cachunkid.c`` (id = digest of the
uncompressed bytes), ``src/compressor.c`` (zstd, streaming API), ``src/castore.c``
(``<first 4 hex>/<id>.cacnk``); desync ``chunk.go``, ``local.go``.
"""

from __future__ import annotations

import hashlib
import lzma
import zlib
from collections.abc import Callable
from typing import Final

import zstandard

from desync_ref.errors import ChunkInvalid, UsageError
from desync_ref.formats.constants import (
    CA_CHUNK_ID_SIZE,
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_SHA512_256,
)

COMPRESSED_CHUNK_SUFFIX: Final = ".cacnk"
# desync's extension for uncompressed chunks in a store (desync const.go, "UncompressedChunkExt").
UNCOMPRESSED_CHUNK_SUFFIX: Final = ""
ZSTD_LEVEL: Final = 3  # casync's compressor.c uses zstd's default level

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
    raise UsageError(f"unknown digest '{name}' (use sha512-256 or sha256)")


def digest_from_flags(feature_flags: int) -> str:
    """An index names its digest with one bit: CA_FORMAT_SHA512_256 set or not."""
    return DIGEST_SHA512_256 if feature_flags & CA_FORMAT_SHA512_256 else DIGEST_SHA256




def parse_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != CA_CHUNK_ID_SIZE:
        raise UsageError(f"invalid chunk id '{text}'")
    return raw


def chunk_file_name(chunk_id: bytes, suffix: str = COMPRESSED_CHUNK_SUFFIX) -> str:
    """Path of a chunk relative to the store root: ``xxxx/<id>.cacnk``."""
    hex_id = chunk_id.hex()
    return f"{hex_id[:4]}/{hex_id}{suffix}"


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
