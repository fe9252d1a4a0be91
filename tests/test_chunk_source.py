"""operations/chunk_source.py: which entries are all zeros, and a repeated chunk fetched once
and kept only until its last use, whether or not extract said what it will fetch."""

from __future__ import annotations

import hashlib
from collections import Counter

from desync_ref.formats.constants import CA_FORMAT_SHA512_256
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.stores import Chunk

MIN, AVG, MAX = 16, 64, 256


def _id(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


class CountingStore:
    """A store in memory that counts what is fetched."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = {_id(b): b for b in blobs}
        self.gets: Counter[bytes] = Counter()

    def get_chunk(self, chunk_id: bytes, digest: object) -> Chunk:
        self.gets[chunk_id] += 1
        return Chunk(chunk_id, data=self.blobs[chunk_id])

    def has_chunk(self, chunk_id: bytes) -> bool:
        return chunk_id in self.blobs

    def close(self) -> None:
        pass


def _index(blobs: list[bytes]) -> Index:
    chunks, start = [], 0
    for blob in blobs:
        chunks.append(IndexChunk(start, len(blob), _id(blob)))
        start += len(blob)
    return Index(CA_FORMAT_SHA512_256, MIN, AVG, MAX, chunks)


def test_zero_entries_are_those_is_zero_names() -> None:
    """Zeros of max size, of the first and last entry's sizes, and an entry carrying the
    zero id of one size but claiming another (not zeros: the id is for other bytes)."""
    blobs = [bytes(40), b"a" * 100, bytes(MAX), b"b" * 70, bytes(MAX), bytes(MAX), b"c" * 90, bytes(30)]
    index = _index(blobs)
    index.chunks[3] = IndexChunk(index.chunks[3].start, 70, _id(bytes(MAX)))
    source = ChunkSource(CountingStore(blobs), index)
    ids = [c.id for c in index.chunks]
    sizes = [c.size for c in index.chunks]
    assert source.zeros_among(ids, sizes) == [0, 2, 4, 5, 7]
    assert source.zeros_among(ids, sizes) == [n for n, c in enumerate(index.chunks) if source.is_zero(c)]
    plain = [b"x" * 50, b"y" * 60]
    assert ChunkSource(CountingStore(plain), _index(plain)).zeros_among(
        [_id(b) for b in plain], [50, 60]) == []


def test_a_repeated_chunk_is_fetched_once_and_dropped_after_its_last_use() -> None:
    blobs = [b"r" * 100, b"s" * 80, b"r" * 100, b"t" * 90, b"r" * 100, b"s" * 80]
    index = _index(blobs)
    store = CountingStore(blobs)
    source = ChunkSource(store, index)  # no expect(): the repeats are counted on first use
    assert [source.get(c) for c in index.chunks] == blobs
    assert store.gets == Counter({_id(b"r" * 100): 1, _id(b"s" * 80): 1, _id(b"t" * 90): 1})
    assert source.fetched == 3 and source._kept == {} and source._kept_bytes == 0


def test_expect_keeps_only_what_repeats_among_the_entries_fetched() -> None:
    blobs = [b"r" * 100, b"s" * 80, b"r" * 100, b"s" * 80]
    index = _index(blobs)
    store = CountingStore(blobs)
    source = ChunkSource(store, index)
    source.expect(index.chunks[:3])  # the last "s" comes from elsewhere (a seed, say)
    assert [source.get(c) for c in index.chunks[:3]] == blobs[:3]
    assert store.gets == Counter({_id(b"r" * 100): 1, _id(b"s" * 80): 1})
    assert source._kept == {}
    source.get(index.chunks[1])  # "s" was not kept: fetched again
    assert store.gets[_id(b"s" * 80)] == 2
