"""Parallel make gives casync's index and chunk store, on files past the parallel threshold
and on many small spans, also on data that resists re-synchronising; it equals the serial
chunker byte for byte; the store holds exactly the index's chunks."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from desync_ref import kernels
from desync_ref.chunking import ChunkSizes
from desync_ref.formats.index import Index, encode_index
from desync_ref.operations import make
from desync_ref.stores.local import LocalStore

# Small chunks: the lookahead (16 max-size chunks) is short, so spans that do not
# re-synchronise fall back to the serial chunker within the test's inputs. The large
# inputs use larger ones to keep the number of chunk files (and the test's time) down.
SIZES = ChunkSizes(1024, 4096, 16384)
LARGE_SIZES = ChunkSizes(4096, 16384, 65536)


SHIFT_HEAD = 50_000


def _inputs(size: int) -> dict[str, Callable[[], bytes]]:
    """The input kinds, each about ``size`` bytes, made on demand from a fixed seed."""

    def random_bytes() -> bytes:
        return random.Random(1).randbytes(size)

    def zero_runs() -> bytes:
        rng = random.Random(2)
        parts: list[bytes] = []
        total = 0
        while total < size:
            part = rng.randbytes(rng.randrange(1, 60_000)) + bytes(rng.randrange(1, 90_000))
            parts.append(part)
            total += len(part)
        return b"".join(parts)[:size]

    def periodic() -> bytes:
        period = random.Random(3).randbytes(1000)
        return (period * (size // len(period) + 1))[:size]

    def shifted_max_grid() -> bytes:
        # Cuts in the random head, the last off the max grid, then only max-size cuts:
        # spans (which start on the grid) never re-synchronise.
        return random.Random(4).randbytes(SHIFT_HEAD) + b"a" * (size - SHIFT_HEAD)

    def repeated_blocks() -> bytes:
        block = random.Random(5).randbytes(70_000) + b"xyz" * 1000
        return (block * (size // len(block) + 1))[:size]

    return {"random": random_bytes, "zeros": lambda: bytes(size), "zero runs": zero_runs,
            "periodic": periodic, "shifted max grid": shifted_max_grid,
            "repeated blocks": repeated_blocks}


# Just past the size where make splits a file over processes (two spans of MIN_SPAN). The
# pure-Python chunker (DESYNC_REF_PURE=1) runs at a few MiB/s: there the same check runs
# at a threshold scaled down to 1 MiB spans.
COMPILED = kernels.is_compiled(kernels.load("chunker"))
LARGE_SPAN = make.MIN_SPAN if COMPILED else 1024 * 1024
LARGE = 2 * LARGE_SPAN + 1024 * 1024
SMALL = 3_000_000
KINDS = list(_inputs(0))


def _off_grid_where_meant(kind: str, index: Index) -> None:
    """The shifted input does what it is for: its max-size cuts lie off the max grid."""
    if kind == "shifted max grid":
        assert index.chunks[-2].end > SHIFT_HEAD
        assert index.chunks[-2].end % index.chunk_size_max != 0


def _chunk_ids(store_dir: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store_dir.glob("*/*.cacnk")}


def _prefix_dirs(store_dir: Path) -> set[str]:
    return {p.name for p in store_dir.iterdir() if p.is_dir()}


class CasyncMade:
    """casync's index and store of each large input, made once per module on first use."""

    def __init__(self, casync: str, base: Path) -> None:
        self.casync, self.base = casync, base
        self.made: dict[str, tuple[Path, bytes, set[str]]] = {}

    def __call__(self, kind: str, size: int, sizes: ChunkSizes) -> tuple[Path, bytes, set[str]]:
        key = f"{kind.replace(' ', '-')}-{size}-{sizes.avg}"
        if key not in self.made:
            blob = self.base / f"{key}.blob"
            blob.write_bytes(_inputs(size)[kind]())
            store = self.base / f"{blob.stem}.castr"
            index = self.base / f"{blob.stem}.caibx"
            chunk_size = f"--chunk-size={sizes.min}:{sizes.avg}:{sizes.max}"
            proc = subprocess.run([self.casync, "make", f"--store={store}", chunk_size,
                                   str(index), str(blob)], capture_output=True, timeout=600)
            assert proc.returncode == 0, proc.stderr.decode()
            self.made[key] = (blob, index.read_bytes(), _chunk_ids(store))
        return self.made[key]


@pytest.fixture(scope="module")
def casync_made(casync: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasyncMade]:
    yield CasyncMade(casync, tmp_path_factory.mktemp("parallel-casync"))


@pytest.mark.casync
@pytest.mark.parametrize("kind", KINDS)
def test_parallel_make_equals_casync(casync_made: CasyncMade, tmp_path: Path, kind: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The parallel path at its real threshold: casync's index bytes and chunk-id set."""
    monkeypatch.setattr(make, "MIN_SPAN", LARGE_SPAN)
    blob, casync_index, casync_ids = casync_made(kind, LARGE, LARGE_SIZES)
    assert len(make.span_starts(LARGE, LARGE_SIZES, 3)) > 1  # the parallel path, not the serial one
    store = LocalStore(tmp_path / "store", create=True)
    index, stats = make.make_index(str(blob), LARGE_SIZES, store=store, workers=3)
    assert encode_index(index) == casync_index
    _off_grid_where_meant(kind, index)
    assert _chunk_ids(tmp_path / "store") == casync_ids
    # ... and no prefix directory that casync's store lacks (left by undone speculative writes)
    assert _prefix_dirs(tmp_path / "store") == {i[:4] for i in casync_ids}
    assert {c.id.hex() for c in index.chunks} == casync_ids
    assert stats.bytes == LARGE


@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(make, "MIN_SPAN", 64 * 1024)
    monkeypatch.setattr(make, "LOOKAHEAD_CHUNKS", 2)


@pytest.mark.casync
@pytest.mark.parametrize("kind", KINDS)
def test_parallel_index_and_store_equal_serial(casync_made: CasyncMade, tmp_path: Path,
                                               small_spans: None, kind: str) -> None:
    """Many small spans and a short lookahead: many joins and serial fallbacks."""
    src, casync_index, casync_ids = casync_made(kind, SMALL, SIZES)
    data = src.read_bytes()
    serial_store = LocalStore(tmp_path / "serial", create=True)
    serial, _ = make.make_index(str(src), SIZES, store=serial_store, workers=1)
    assert len(make.span_starts(len(data), SIZES, 3)) > 3
    parallel_store = LocalStore(tmp_path / "parallel", create=True)
    parallel, stats = make.make_index(str(src), SIZES, store=parallel_store, workers=3)
    assert encode_index(parallel) == encode_index(serial) == casync_index
    _off_grid_where_meant(kind, parallel)
    assert _chunk_ids(tmp_path / "parallel") == casync_ids
    assert set(parallel_store.chunk_ids()) == {c.id for c in serial.chunks}
    assert set(serial_store.chunk_ids()) == {c.id for c in serial.chunks}
    assert stats.bytes == len(data)


def test_span_starts_sit_on_the_max_grid() -> None:
    starts = make.span_starts(1 << 30, ChunkSizes(16384, 65536, 262144), 2)
    assert starts[0] == 0 and len(starts) > 2
    assert all(s % 262144 == 0 for s in starts)
    assert make.span_starts(1 << 20, SIZES, 8) == [0]
