"""Chunk encryption: the AEAD layer a store may put over a chunk's (compressed) bytes.

Spec: ``spec/store.md`` ("Chunk encryption"). After desync ``encrypt.go``
(``aeadConverter``, ``NewXChaCha20Poly1305``, ``NewAES256GCM``, ``newAEADConverter``) and
``store.go`` (``StorageConverters``: the key is hex in the options, decoded to 32 bytes,
never derived). Stored bytes are ``nonce || ciphertext || tag``: a fresh random nonce per
chunk (24 bytes for XChaCha20-Poly1305, 12 for AES-256-GCM), no associated data, a
16-byte tag (Go's ``AEAD.Seal`` appends it). The name extension is
``.<algorithm>-<first 4 bytes of SHA-256 of the raw key, lowercase hex>`` so chunks under
different keys can share a store.

Bytes in, bytes out: the only outside input is the random nonce. The cipher library is
pycryptodome (``Crypto.Cipher``), imported when a cipher is first made.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass, field
from typing import Any, Final

from desync_ref.errors import ChunkInvalid, InvalidParameter

XCHACHA20_POLY1305: Final = "xchacha20-poly1305"
AES_256_GCM: Final = "aes-256-gcm"
# desync store.go StorageConverters: "" means the default, XChaCha20-Poly1305.
DEFAULT_ALGORITHM: Final = XCHACHA20_POLY1305
ALGORITHMS: Final = (XCHACHA20_POLY1305, AES_256_GCM)

KEY_SIZE: Final = 32  # desync encrypt.go EncryptionKeySize: every algorithm takes 256 bits
TAG_SIZE: Final = 16  # both AEADs' tag (Go's AEAD.Overhead())
# Go's chacha20poly1305.NonceSizeX and cipher.NewGCM's standard nonce size.
NONCE_SIZES: Final = {XCHACHA20_POLY1305: 24, AES_256_GCM: 12}
KEY_ID_BYTES: Final = 4  # leading bytes of sha256(key) in the extension (newAEADConverter)

_HEX: Final = frozenset(string.hexdigits)


def parse_key(text: str) -> bytes:
    """A hex-encoded 256-bit key as its 32 bytes (either case, as Go's ``hex.DecodeString``;
    no spaces or prefix)."""
    if len(text) % 2 or not all(ch in _HEX for ch in text):
        raise InvalidParameter("invalid encryption key, expected a hex-encoded 256-bit key",
                               parameter="encryption-key")
    key = bytes.fromhex(text)
    if len(key) != KEY_SIZE:
        raise InvalidParameter(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}",
                               parameter="encryption-key")
    return key


def check_algorithm(name: str | None) -> str:
    """The algorithm's name, the default for None or "" (desync's switch in StorageConverters)."""
    if not name:
        return DEFAULT_ALGORITHM
    if name not in ALGORITHMS:
        raise InvalidParameter(f"unsupported encryption algorithm \"{name}\" (use {' or '.join(ALGORITHMS)})",
                               parameter="encryption-algorithm")
    return name


def key_extension(algorithm: str, key: bytes) -> str:
    """``.<algorithm>-<8 hex digits>``: the key id is the first 4 bytes of sha256(key)."""
    return f".{algorithm}-{hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()}"


@dataclass(frozen=True)
class ChunkCipher:
    """One algorithm with one key: seals and opens stored chunk bytes."""

    algorithm: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        if len(self.key) != KEY_SIZE:
            raise InvalidParameter(f"encryption key must be {KEY_SIZE} bytes, got {len(self.key)}",
                                   parameter="encryption-key")

    @property
    def nonce_size(self) -> int:
        return NONCE_SIZES[self.algorithm]

    @property
    def extension(self) -> str:
        return key_extension(self.algorithm, self.key)

    def _aead(self, nonce: bytes) -> Any:
        # pycryptodome: a 24-byte nonce makes ChaCha20_Poly1305 the XChaCha20 variant.
        if self.algorithm == XCHACHA20_POLY1305:
            from Crypto.Cipher import ChaCha20_Poly1305
            return ChaCha20_Poly1305.new(key=self.key, nonce=nonce)
        from Crypto.Cipher import AES
        return AES.new(self.key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)

    def seal(self, plain: bytes, nonce: bytes | None = None) -> bytes:
        """``nonce || ciphertext || tag``; a fresh random nonce unless one is given (tests)."""
        if nonce is None:
            nonce = os.urandom(self.nonce_size)
        elif len(nonce) != self.nonce_size:
            raise InvalidParameter(f"{self.algorithm} takes a {self.nonce_size}-byte nonce, got {len(nonce)}",
                                   parameter="nonce")
        ciphertext, tag = self._aead(nonce).encrypt_and_digest(plain)
        return bytes(nonce) + bytes(ciphertext) + bytes(tag)

    def open(self, blob: bytes) -> bytes:
        """The plain bytes of a sealed blob; ChunkInvalid when it does not authenticate
        (another key or algorithm, or damaged bytes)."""
        size = self.nonce_size
        if len(blob) < size + TAG_SIZE:
            raise ChunkInvalid(f"too short for {self.algorithm} (no nonce and tag), "
                               "not encrypted or wrong algorithm?")
        try:
            plain = self._aead(blob[:size]).decrypt_and_verify(blob[size:-TAG_SIZE], blob[-TAG_SIZE:])
        except ValueError:
            raise ChunkInvalid(f"{self.algorithm} authentication failed, wrong key or algorithm?") from None
        return bytes(plain)


def chunk_cipher(algorithm: str | None, key_hex: str) -> ChunkCipher:
    """The cipher for an algorithm name (None: the default) and a hex key."""
    return ChunkCipher(check_algorithm(algorithm), parse_key(key_hex))
