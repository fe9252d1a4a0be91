"""Chunk and index stores, after desync's interfaces (``store.go``), as typing.Protocol.

Spec: ``spec/store.md``. A store hands out :class:`Chunk` objects; whoever consumes the
bytes verifies them against the id (stores do not know the index's digest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from desync_ref.formats.chunk import compress, decompress
from desync_ref.formats.index import Index


class Chunk:
    """A chunk in whichever form it was met: compressed, plain, or both (computed lazily)."""

    __slots__ = ("_compressed", "_data", "id")

    def __init__(self, chunk_id: bytes, *, data: bytes | None = None, compressed: bytes | None = None) -> None:
        if data is None and compressed is None:
            raise ValueError("a chunk needs data or compressed bytes")
        self.id = chunk_id
        self._data = data
        self._compressed = compressed

    def data(self) -> bytes:
        if self._data is None:
            assert self._compressed is not None
            self._data = decompress(self._compressed, self.id)
        return self._data

    def compressed(self) -> bytes:
        if self._compressed is None:
            assert self._data is not None
            self._compressed = compress(self._data)
        return self._compressed


@runtime_checkable
class Store(Protocol):
    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """The chunk, or raise ChunkMissing."""

    def has_chunk(self, chunk_id: bytes) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class WriteStore(Store, Protocol):
    def store_chunk(self, chunk: Chunk) -> None: ...

    def remove_chunk(self, chunk_id: bytes) -> None:
        """Delete one chunk if present (make uses it to undo speculative writes)."""


@runtime_checkable
class PruneStore(WriteStore, Protocol):
    def prune(self, keep: set[bytes]) -> int:
        """Delete every chunk not in ``keep``; return how many were removed."""

    def chunk_ids(self) -> Iterator[bytes]: ...


@runtime_checkable
class IndexStore(Protocol):
    def get_index(self, name: str) -> Index: ...

    def close(self) -> None: ...


@runtime_checkable
class IndexWriteStore(IndexStore, Protocol):
    def store_index(self, name: str, index: Index) -> None: ...
