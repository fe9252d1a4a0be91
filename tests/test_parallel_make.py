"""Parallel make equals the serial chunker byte for byte, also on data that resists
re-synchronising, and leaves exactly the index's chunks in the store."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from desync_ref.chunking import ChunkSizes
from desync_ref.formats.index import encode_index
from desync_ref.operations import make
from desync_ref.stores.local import LocalStore

SIZES = ChunkSizes(1024, 4096, 16384)


def _inputs() -> dict[str, bytes]:
    rng = random.Random(42)
    period = rng.randbytes(1000)
    return {
        "random": rng.randbytes(3_000_000),
        "zeros": bytes(2_000_000),
        "zero runs": b"".join(rng.randbytes(rng.randrange(1, 60_000)) + bytes(rng.randrange(1, 90_000))
                              for _ in range(40)),
        "periodic": period * 2500,
        # One early cut off the max grid, then only max-size cuts: spans never re-sync.
        "shifted max grid": rng.randbytes(5000) + b"a" * 2_000_000,
        "repeated blocks": (rng.randbytes(70_000) + b"xyz" * 1000) * 30,
    }


@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(make, "MIN_SPAN", 64 * 1024)
    monkeypatch.setattr(make, "LOOKAHEAD_CHUNKS", 2)


@pytest.mark.parametrize("name", list(_inputs()))
def test_parallel_index_and_store_equal_serial(tmp_path: Path, small_spans: None, name: str) -> None:
    data = _inputs()[name]
    src = tmp_path / "blob"
    src.write_bytes(data)
    serial_store = LocalStore(tmp_path / "serial", create=True)
    serial, _ = make.make_index(str(src), SIZES, store=serial_store, workers=1)
    assert len(make.span_starts(len(data), SIZES, 3)) > 3
    parallel_store = LocalStore(tmp_path / "parallel", create=True)
    parallel, stats = make.make_index(str(src), SIZES, store=parallel_store, workers=3)
    assert encode_index(parallel) == encode_index(serial)
    assert set(parallel_store.chunk_ids()) == {c.id for c in serial.chunks}
    assert set(serial_store.chunk_ids()) == {c.id for c in serial.chunks}
    assert stats.bytes == len(data)


def test_span_starts_sit_on_the_max_grid() -> None:
    starts = make.span_starts(1 << 30, ChunkSizes(16384, 65536, 262144), 2)
    assert starts[0] == 0 and len(starts) > 2
    assert all(s % 262144 == 0 for s in starts)
    assert make.span_starts(1 << 20, SIZES, 8) == [0]
