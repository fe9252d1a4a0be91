"""The form a store keeps a chunk in: the bytes it holds and the name extension that says so.

Spec: ``spec/store.md`` ("Chunk storage form"). After desync ``converter.go``
(``Converters``: ``toStorage``, ``fromStorage``, ``storageExtension``): a store either
keeps chunks zstd-compressed under ``<id>.cacnk`` (casync's form) or plain under ``<id>``
(desync's ``-u``). Object-store backends (S3, GCS, OCI) and HTTP use :func:`storage_form`
to name their keys and to turn bytes into checked chunks; the one check of outside bytes
stays :meth:`Chunk.with_id`.
"""

from __future__ import annotations

from dataclasses import dataclass

from desync_ref.formats.chunk import COMPRESSED_CHUNK_SUFFIX, UNCOMPRESSED_CHUNK_SUFFIX, Digest
from desync_ref.stores import Chunk
from desync_ref.stores.options import StoreOptions


@dataclass(frozen=True)
class StorageForm:
    """How a store holds chunks: compressed (``.cacnk``) or plain (no extension)."""

    compressed: bool = True

    @property
    def extension(self) -> str:
        """What follows the id in a chunk's name (desync ``storageExtension``)."""
        return COMPRESSED_CHUNK_SUFFIX if self.compressed else UNCOMPRESSED_CHUNK_SUFFIX

    def to_storage(self, chunk: Chunk) -> bytes:
        """The bytes to store for ``chunk``."""
        return chunk.compressed() if self.compressed else chunk.data()

    def from_storage(self, chunk_id: bytes, blob: bytes, digest: Digest | None) -> Chunk:
        """The chunk stored as ``blob``, checked with ``digest`` (None: trusted); raises
        ChunkInvalid when the bytes are not this chunk."""
        if self.compressed:
            return Chunk.with_id(chunk_id, digest, compressed=blob)
        return Chunk.with_id(chunk_id, digest, data=blob)


def storage_form(options: StoreOptions) -> StorageForm:
    """The form the options ask for (``options`` already picked for one location)."""
    return StorageForm(compressed=not options.uncompressed)
