"""chunking.Chunker (spec/chunker.md § "The driver"): the cuts do not depend on how the
input is split into ``feed`` calls, and equal those of one whole-buffer scan."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_ref.chunking import Chunker, ChunkSizes, iter_chunks, iter_cuts
from desync_ref.formats.index import encode_index
from desync_ref.operations.make import StreamIndexer, make_index_from_stream

KIB = 1024
SIZES = [ChunkSizes(64, 256, 1024), ChunkSizes(1, 2, 4), ChunkSizes(48, 48, 200),
         ChunkSizes(100, 300, 5000), ChunkSizes(300, 300, 300), ChunkSizes(4, 16, 32),
         ChunkSizes(1 * KIB, 4 * KIB, 16 * KIB)]


def reference_cuts(data: bytes, sizes: ChunkSizes) -> list[int]:
    """One scan over the whole input at once."""
    return list(iter_cuts(data, sizes, final=True))


def fed_cuts(data: bytes, sizes: ChunkSizes, splits: list[int], batch: int | None = None) -> list[int]:
    chunker = Chunker(sizes, batch=batch)
    chunks = []
    prev = 0
    for at in [*sorted(splits), len(data)]:
        chunks += chunker.feed(data[prev:at])
        prev = at
    chunks += chunker.finish()
    joined = b"".join(piece for _, piece in chunks)
    assert joined == data
    ends = []
    for start, piece in chunks:
        assert start == (ends[-1] if ends else 0)
        ends.append(start + len(piece))
    return ends


def sample(seed: int, length: int) -> bytes:
    rng = random.Random(seed)
    # random bytes with runs of zeros, so max-size cuts and hash cuts both occur
    out = bytearray(rng.randbytes(length))
    for _ in range(length // 2000):
        at = rng.randrange(max(1, length))
        out[at:at + rng.randrange(3000)] = bytes(min(length - at, 3000))
    return bytes(out[:length])


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(0, 40000),
       sizes=st.sampled_from(SIZES), splits=st.lists(st.integers(0, 40000), max_size=30),
       batch=st.sampled_from([None, 1, 100, 5000, 20000]))
def test_any_split_gives_the_cuts_of_one_feed(seed: int, length: int, sizes: ChunkSizes,
                                              splits: list[int], batch: int | None) -> None:
    data = sample(seed, length)
    want = reference_cuts(data, sizes)
    # ``batch`` makes the driver scan after (nearly) every piece, or only at the end.
    assert fed_cuts(data, sizes, [s for s in splits if s <= length], batch) == want
    assert fed_cuts(data, sizes, [], batch) == want


@pytest.mark.parametrize("sizes", SIZES[:3])
def test_one_byte_at_a_time(sizes: ChunkSizes) -> None:
    data = sample(5, 6000)
    assert fed_cuts(data, sizes, list(range(len(data))), batch=1) == reference_cuts(data, sizes)


def test_default_sizes_across_batches() -> None:
    # Several driver batches (4 MiB each), fed in odd-sized pieces.
    sizes = ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)
    data = sample(9, 9 * 1024 * 1024 + 12345)
    splits = list(range(0, len(data), 1_000_003))
    assert fed_cuts(data, sizes, splits) == reference_cuts(data, sizes)
    assert [s + len(c) for s, c in iter_chunks(io.BytesIO(data), sizes)] == reference_cuts(data, sizes)


def test_finish_is_final() -> None:
    chunker = Chunker(ChunkSizes(64, 256, 1024))
    assert chunker.feed(b"x" * 100) == []
    assert chunker.finish() == [(0, b"x" * 100)]
    assert chunker.finish() == []
    with pytest.raises(RuntimeError):
        chunker.feed(b"y")


def test_stream_indexer_matches_make_from_stream() -> None:
    sizes = ChunkSizes(1 * KIB, 4 * KIB, 16 * KIB)
    data = sample(3, 300_000)
    want, _ = make_index_from_stream(io.BytesIO(data), sizes, workers=1)
    indexer = StreamIndexer(sizes, workers=3)
    for at in range(0, len(data), 777):
        indexer.feed(data[at:at + 777])
    got, stats = indexer.finish()
    assert got.chunks == want.chunks and encode_index(got) == encode_index(want)
    assert stats.bytes == len(data) and stats.chunks == len(want.chunks)
