"""Chunk and index stores, after desync's interfaces (``store.go``), as typing.Protocol.

Spec: ``spec/store.md``. What a store can do is its type: a :class:`Store` reads, a
:class:`WriteStore` also takes chunks, a :class:`PruneStore` also lists and prunes them; the
wrappers (router, cache, failover, swap) are typed for what they can deliver and no more.

A chunk whose bytes come from outside (a store file, an HTTP body, a PUT) is built with
:meth:`Chunk.with_id`, which checks it against its id once, when it is built (desync
``NewChunkWithID`` / ``NewChunkFromStorage``). ``get_chunk`` takes the digest to check with,
so a reader decides once, explicitly, whether its chunks are checked (``None``: trusted,
desync's ``skip-verify``), and nothing downstream checks again. Chunks made by our own
chunker are built with ``Chunk(id, data=...)``, their id computed from those very bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from desync_ref.formats.chunk import Digest, compress, decompress, decompress_limit, verify
from desync_ref.formats.index import Index


class Chunk:
    """A chunk in whichever form it was met: compressed, plain, or both (computed lazily).

    The constructor trusts its caller (bytes our chunker made, or already checked); bytes
    from outside go through :meth:`with_id`.
    """

    __slots__ = ("_compressed", "_data", "id")

    def __init__(self, chunk_id: bytes, *, data: bytes | None = None, compressed: bytes | None = None) -> None:
        if data is None and compressed is None:
            raise ValueError("a chunk needs data or compressed bytes")
        self.id = chunk_id
        self._data = data
        self._compressed = compressed

    @classmethod
    def with_id(cls, chunk_id: bytes, digest: Digest | None, *, data: bytes | None = None,
                compressed: bytes | None = None) -> Chunk:
        """A chunk from outside bytes, checked against ``chunk_id`` with ``digest`` (not
        checked when ``digest`` is None). Raises ChunkInvalid when the bytes do not
        decompress or do not hash to the id, or, when ``digest`` is a ChunkCheck carrying
        the index entry, decompress past the index's max chunk size or differ from the
        entry's size."""
        if digest is not None and data is None and compressed is not None:
            data = decompress(compressed, chunk_id, decompress_limit(digest))
        chunk = cls(chunk_id, data=data, compressed=compressed)
        if digest is not None:
            verify(chunk_id, chunk.data(), digest)
        return chunk

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
    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        """The chunk, checked with ``digest`` unless it is None; or raise ChunkMissing
        (absent) or ChunkInvalid (present but bad)."""

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Presence only; nothing is read or checked."""

    def close(self) -> None: ...


@runtime_checkable
class WriteStore(Store, Protocol):
    def store_chunk(self, chunk: Chunk) -> None: ...

    def remove_chunk(self, chunk_id: bytes) -> None:
        """Delete one chunk if present (``verify -r`` removes invalid chunks with it); a
        no-op where the protocol has no delete (HTTP)."""


@runtime_checkable
class PruneStore(WriteStore, Protocol):
    def prune(self, keep: set[bytes]) -> int:
        """Delete every chunk not in ``keep``; return how many were removed."""

    def chunk_ids(self) -> Iterator[bytes]: ...


@runtime_checkable
class InlineRead(Store, Protocol):
    """A store that can say whether a read is cheap enough to make on an event loop."""

    def reads_inline(self, uncompressed: bool) -> bool:
        """True when ``get_chunk(id, None)`` is a local file read whose bytes already have the
        asked form (``uncompressed`` or compressed): no network, no conversion."""


@runtime_checkable
class IndexStore(Protocol):
    def get_index(self, name: str) -> Index: ...

    def close(self) -> None: ...


@runtime_checkable
class IndexWriteStore(IndexStore, Protocol):
    def store_index(self, name: str, index: Index) -> None: ...
