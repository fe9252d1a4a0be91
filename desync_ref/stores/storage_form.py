"""The form a store keeps a chunk in: the bytes it holds and the name extension that says so.

Spec: ``spec/store.md`` ("Chunk storage form", "Chunk encryption"). After desync
``converter.go`` (``Converters``: ``toStorage``, ``fromStorage``, ``storageExtension``) and
``store.go`` (``StorageConverters``): a store keeps chunks zstd-compressed under
``<id>.cacnk`` (casync's form) or plain under ``<id>`` (desync's ``-u``), and with
``encryption`` seals those bytes with an AEAD (``formats/encryption.py``), the name gaining
``.<algorithm>-<key id>``. Object-store backends (S3, GCS, OCI) and HTTP use
:func:`storage_form` to name their keys and to turn bytes into checked chunks; the one
check of outside bytes stays :meth:`Chunk.with_id`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from desync_ref.errors import ChunkInvalid, InvalidParameter
from desync_ref.formats.chunk import COMPRESSED_CHUNK_SUFFIX, UNCOMPRESSED_CHUNK_SUFFIX, Digest
from desync_ref.formats.encryption import ChunkCipher, chunk_cipher
from desync_ref.stores import Chunk
from desync_ref.stores.options import StoreOptions, redact

# desync cmd/desync/config.go encryptionKeyFallback: the key when encryption is on and no
# key is configured. On its own it never turns encryption on.
ENCRYPTION_KEY_ENV: Final = "DESYNC_ENCRYPTION_KEY"


@dataclass(frozen=True)
class StorageForm:
    """How a store holds chunks: compressed (``.cacnk``) or plain (no extension), and
    sealed by ``cipher`` when the store is encrypted."""

    compressed: bool = True
    cipher: ChunkCipher | None = None

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    @property
    def extension(self) -> str:
        """What follows the id in a chunk's name (desync ``storageExtension``: the layers'
        extensions in order, compression first)."""
        base = COMPRESSED_CHUNK_SUFFIX if self.compressed else UNCOMPRESSED_CHUNK_SUFFIX
        return base if self.cipher is None else base + self.cipher.extension

    def to_storage(self, chunk: Chunk) -> bytes:
        """The bytes to store for ``chunk``: compressed unless plain, then sealed."""
        blob = chunk.compressed() if self.compressed else chunk.data()
        return blob if self.cipher is None else self.cipher.seal(blob)

    def from_storage(self, chunk_id: bytes, blob: bytes, digest: Digest | None, *, where: str = "") -> Chunk:
        """The chunk stored as ``blob``, checked with ``digest`` (None: trusted); raises
        ChunkInvalid when the bytes are not this chunk. An encrypted blob is always
        authenticated, trusted or not, so a wrong key never yields bytes. ``where`` (a
        store) is appended to the error as `` in store <where>``."""
        try:
            if self.cipher is not None:
                try:
                    blob = self.cipher.open(blob)
                except ChunkInvalid as exc:
                    raise ChunkInvalid(f"cannot decrypt chunk {chunk_id.hex()}: {exc}") from None
            if self.compressed:
                return Chunk.with_id(chunk_id, digest, compressed=blob)
            return Chunk.with_id(chunk_id, digest, data=blob)
        except ChunkInvalid as exc:
            if not where:
                raise
            raise ChunkInvalid(f"{exc} in store {where}") from None


def storage_form(options: StoreOptions, location: str = "") -> StorageForm:
    """The form the options ask for (``options`` already picked for one location, which
    ``location`` names in errors). Encryption settings are checked here, as desync's
    ``StorageConverters`` does: a key or algorithm without ``encryption`` is refused rather
    than silently storing plain chunks, and ``encryption`` without a key likewise."""
    compressed = not options.uncompressed
    if not options.encryption:
        if options.encryption_key or options.encryption_algorithm:
            raise _invalid(location, "encryption-key or encryption-algorithm configured without "
                                     "setting encryption to true", "encryption")
        return StorageForm(compressed=compressed)
    key = options.encryption_key or os.environ.get(ENCRYPTION_KEY_ENV, "")
    if not key:
        raise _invalid(location, f"encryption is on but no encryption key configured "
                                 f"(encryption-key or ${ENCRYPTION_KEY_ENV})", "encryption-key")
    try:
        cipher = chunk_cipher(options.encryption_algorithm, key)
    except InvalidParameter as exc:
        raise _invalid(location, str(exc), exc.parameter) from None
    return StorageForm(compressed=compressed, cipher=cipher)


def _invalid(location: str, message: str, parameter: str) -> InvalidParameter:
    prefix = f"store options for \"{redact(location)}\": " if location else ""
    return InvalidParameter(prefix + message, parameter=parameter)
