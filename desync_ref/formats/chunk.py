"""Chunks: ids, digests, zstd compression and store file names.

Spec: ``spec/store.md``. Sources: casync ``src/cachunkid.c`` (id = digest of the
uncompressed bytes), ``src/compressor.c`` (zstd, streaming API), ``src/castore.c``
(``<first 4 hex>/<id>.cacnk``); desync ``chunk.go``, ``local.go``.
"""

from __future__ import annotations

import hashlib
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


def _sha512_256(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


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


def format_id(chunk_id: bytes) -> str:
    return chunk_id.hex()


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
    # A ZstdCompressor is not safe to share across threads; one per call is cheap.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


# Decompressed chunks never exceed casync's hard limit; a frame that claims more is
# refused before its output is allocated.
MAX_DECOMPRESSED_SIZE: Final = CA_CHUNK_SIZE_LIMIT_MAX


def decompress(blob: bytes, chunk_id: bytes | None = None, limit: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Decompress one whole zstd frame of at most ``limit`` bytes.

    casync's frames carry no content size (streaming API), so the frame is streamed.
    """
    what = f"chunk {chunk_id.hex()}" if chunk_id else "chunk"
    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(blob)
        if not dobj.eof or dobj.unused_data:
            raise zstandard.ZstdError("truncated frame or trailing data")
    except zstandard.ZstdError as exc:
        raise ChunkInvalid(f"{what} is not valid zstd data: {exc}") from None
    if len(out) > limit:
        raise ChunkInvalid(f"{what} decompresses to more than {limit} bytes")
    return bytes(out)


def verify(chunk_id: bytes, data: bytes, digest: Digest) -> None:
    actual = digest(data)
    if actual != chunk_id:
        raise ChunkInvalid(f"chunk id {chunk_id.hex()} does not match its hash {actual.hex()}")
