"""Hole-aware chunking (operations/sparse_chunks.py) gives exactly the chunks of the file
read in full, on any layout of data and holes, for every chunk-size set of the conformance
suite and the edge sets (a zero window that cuts, min below the window, fixed size).
Spec: spec/chunker.md § "Holes"."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_ref import kernels
from desync_ref.chunking import ChunkSizes, iter_chunks
from desync_ref.formats.chunk import DIGEST_SHA512_256, digest_function
from desync_ref.fs.holes import data_regions
from desync_ref.operations.sparse_chunks import (
    ZeroIds,
    data_span_starts,
    iter_sparse_chunks,
    iter_sparse_ids,
    zero_chunk_length,
    zero_window_hash,
)
from fixtures.cases import CHUNK_SETS

KIB = 1024
PURE = kernels.pure_requested()
# Z + 1 = 0x9e489e49 = 3943 * 673487: with min = avg = 3943 casync clamps the
# discriminator to 3943, and a window of zeros cuts (at min).
ZERO_CUTS = ChunkSizes(3943, 3943, 4 * 3943)
EDGE_SETS = [ZERO_CUTS, ChunkSizes(16, 64, 256), ChunkSizes(64, 64, 256),
             ChunkSizes(4 * KIB, 4 * KIB, 4 * KIB), ChunkSizes(1, 1, 1)]
SIZE_SETS = [ChunkSizes(s.min, s.avg, s.max) for s in CHUNK_SETS] + EDGE_SETS
# The interpreted chunker scans ~3 MiB/s: the pure pass checks the named layouts with the
# smaller sets only (the random layouts still cover every set).
NAMED_LAYOUT_SETS = [s for s in SIZE_SETS if not PURE or s.max <= 64 * KIB]
digest = digest_function(DIGEST_SHA512_256)


def full_read(path: Path, sizes: ChunkSizes, start: int = 0) -> list[tuple[int, int, bytes]]:
    data = path.read_bytes()[start:]
    return [(start + offset, len(chunk), digest(chunk))
            for offset, chunk in iter_chunks(io.BytesIO(data), sizes)]


def hole_aware(path: Path, sizes: ChunkSizes, start: int = 0) -> list[tuple[int, int, bytes]]:
    with open(path, "rb") as f:
        return list(iter_sparse_ids(f.fileno(), sizes, DIGEST_SHA512_256, start,
                                    os.fstat(f.fileno()).st_size))


def write_layout(path: Path, layout: list[tuple[str, int]], seed: int) -> int:
    """A file of ``layout``'s pieces: "data" random bytes, "zeros" zero bytes written (so
    allocated), "hole" never written. Returns its length."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        offset = 0
        for kind, length in layout:
            if kind == "data":
                os.pwrite(f.fileno(), rng.randbytes(length), offset)
            elif kind == "zeros":
                os.pwrite(f.fileno(), bytes(length), offset)
            offset += length
        f.truncate(offset)
    return offset


def test_zero_window_hash_is_the_documented_constant() -> None:
    assert zero_window_hash() == 0x9E489E48  # spec/deviations.md, spec/chunker.md § Holes


def test_zero_chunk_length_derived_from_the_sizes() -> None:
    assert zero_chunk_length(ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)) == 256 * KIB
    assert zero_chunk_length(ZERO_CUTS) == 3943
    assert zero_chunk_length(ChunkSizes(4 * KIB, 4 * KIB, 4 * KIB)) == 4 * KIB
    assert zero_chunk_length(ChunkSizes(1, 1, 1)) == 1
    assert zero_chunk_length(ChunkSizes(1, 2, 40)) == 48  # first test at 48 > max: size cuts
    # Checked against the chunker itself: zeros of three max lengths.
    for sizes in SIZE_SETS:
        cuts = [len(c) for _, c in iter_chunks(io.BytesIO(bytes(3 * sizes.max + 5)), sizes)]
        assert cuts[0] == zero_chunk_length(sizes), sizes


def _piece(sizes: ChunkSizes) -> st.SearchStrategy[tuple[str, int]]:
    top = sizes.max
    lengths = st.one_of(
        st.integers(1, 100),  # shorter than the window
        st.sampled_from([47, 48, 49, 4096, 8192, top - 1, top, top + 1, 2 * top + 4096]),
        st.integers(1, 3 * top),
        st.integers(1, 8).map(lambda n: n * 4096),  # whole blocks: real holes
    )
    return st.tuples(st.sampled_from(["data", "hole", "hole", "zeros"]), lengths)


def _check_layout(tmp_path: Path, sizes: ChunkSizes, layout: list[tuple[str, int]],
                  seed: int, start_at: int) -> None:
    path = tmp_path / "sparse"
    length = write_layout(path, layout, seed)
    assert hole_aware(path, sizes) == full_read(path, sizes)
    # A span worker starts at an arbitrary offset as if a chunk began there.
    start = start_at % (length + 1)
    assert hole_aware(path, sizes, start) == full_read(path, sizes, start)


@pytest.mark.parametrize("sizes", SIZE_SETS[:5], ids=str)
@settings(max_examples=4 if PURE else 40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_identity_with_full_read(tmp_path: Path, sizes: ChunkSizes, data: st.DataObject) -> None:
    layout = data.draw(st.lists(_piece(sizes), min_size=1, max_size=5 if PURE else 8))
    _check_layout(tmp_path, sizes, layout, data.draw(st.integers(0, 2**32)),
                  data.draw(st.integers(0, 2**40)))


@pytest.mark.parametrize("sizes", SIZE_SETS[5:], ids=str)
@settings(max_examples=4 if PURE else 30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_identity_with_full_read_edge_sets(tmp_path: Path, sizes: ChunkSizes,
                                           data: st.DataObject) -> None:
    if sizes.max < 64:  # 1:1:1 gives a chunk per byte: keep the file short
        layout = data.draw(st.lists(st.tuples(st.sampled_from(["data", "hole"]),
                                              st.integers(1, 9000)), min_size=1, max_size=4))
    else:
        layout = data.draw(st.lists(_piece(sizes), min_size=1, max_size=6))
    _check_layout(tmp_path, sizes, layout, data.draw(st.integers(0, 2**32)),
                  data.draw(st.integers(0, 2**40)))


@pytest.mark.parametrize("sizes", NAMED_LAYOUT_SETS, ids=str)
def test_fixed_layouts(tmp_path: Path, sizes: ChunkSizes) -> None:
    """The careful cases by name: holes at start and end, a hole shorter than the window,
    data running into a hole, a hole not aligned with anything, all holes."""
    top = sizes.max if sizes.max > 1 else 4096
    layouts = [
        [("hole", 3 * top + 5000), ("data", 100), ("hole", 2 * top + 4096)],
        [("data", 5000), ("hole", 20), ("data", 7000), ("hole", top + 4096 * 3 + 17)],
        [("data", top - 10), ("hole", 4096 * 5 + 1), ("zeros", 47), ("data", 1)],
        [("hole", 4096 * 9)],
        [("hole", 1)],
    ]
    for seed, layout in enumerate(layouts):
        _check_layout(tmp_path, sizes, layout, seed, seed * 7919)


def test_holes_are_not_read(tmp_path: Path) -> None:
    """A 1 GiB file with 8 KiB of data: the hole-aware scan hands out no bytes for the
    holes (None), so nothing of them was read; the ids are the full read's, which for
    zeros is checked against one zero chunk hashed here."""
    sizes = ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        os.pwrite(f.fileno(), random.Random(1).randbytes(8192), 512 << 20)
    with open(path, "rb") as f:
        if len(data_regions(f.fileno(), 0, 1 << 30)) != 1:
            pytest.skip("the file system does not report holes")
        chunks = list(iter_sparse_chunks(f.fileno(), sizes, 0, 1 << 30))
    read = [c for c in chunks if c[2] is not None]
    assert sum(size for _, size, _ in read) <= 2 * sizes.max + 8192
    assert sum(size for _, size, _ in chunks) == 1 << 30
    assert [size for _, size, data in chunks if data is None][:3] == [sizes.max] * 3
    assert ZeroIds(DIGEST_SHA512_256)(sizes.max) == digest(bytes(sizes.max))


def test_spans_placed_on_data(tmp_path: Path) -> None:
    sizes = ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)
    path = tmp_path / "spans"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        for n in range(4):
            os.pwrite(f.fileno(), b"x" * (8 << 20), (n * 256 + 100) << 20)
        starts = data_span_starts(f.fileno(), 1 << 30, sizes, 2, 4 << 20)
    assert starts[0] == 0 and len(starts) == 8
    assert all(s % sizes.max == 0 for s in starts)
    for s in starts[1:]:  # each within (or just before) one of the data regions
        assert any((n * 256 + 100) << 20 <= s + sizes.max and s < (n * 256 + 108) << 20
                   for n in range(4))
