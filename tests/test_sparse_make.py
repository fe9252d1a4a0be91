"""make, chop and verify-index on files with holes: the same index as casync's, the holes
not read, a zero chunk in a hole checked like any other. Spec: spec/chunker.md § "Holes"."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from conftest import assert_clean_failure, bytes_read, run_cli

from desync_ref.chunking import ChunkSizes
from desync_ref.formats.chunk import chunk_file_name
from desync_ref.formats.index import parse_index
from desync_ref.fs.holes import has_holes, punch_hole
from desync_ref.operations import make
from desync_ref.stores.local import LocalStore

KIB = 1024
MIB = 1024 * KIB
DEFAULT = ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)


def sparse_file(path: Path, length: int, pieces: list[tuple[int, int]], seed: int = 1) -> Path:
    """``length`` bytes, random data at each (offset, size) of ``pieces``, holes elsewhere."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(length)
        for offset, size in pieces:
            os.pwrite(f.fileno(), rng.randbytes(size), offset)
    with open(path, "rb") as f:
        if not has_holes(f.fileno(), length):
            pytest.skip("the file system does not report holes")
    return path


def casync_index(casync: str, blob: Path, out: Path, sizes: ChunkSizes) -> bytes:
    subprocess.run([casync, "make", f"--chunk-size={sizes.min}:{sizes.avg}:{sizes.max}",
                    str(out), str(blob)], check=True, capture_output=True)
    return out.read_bytes()


def store_ids(store: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store.rglob("*.cacnk")}


LAYOUT = [(0, 0), (300_001, 70_000), (2 * MIB + 4095, 5), (2 * MIB + 300_000, 400_000),
          (5 * MIB - 100, 100)]


@pytest.mark.parametrize("sizes", [DEFAULT, ChunkSizes(1 * KIB, 4 * KIB, 16 * KIB)], ids=str)
def test_make_of_sparse_file_equals_casync(casync: str, tmp_path: Path, sizes: ChunkSizes) -> None:
    blob = sparse_file(tmp_path / "blob", 6 * MIB, LAYOUT)
    store = tmp_path / "store"
    kib = f"{sizes.min // KIB}:{sizes.avg // KIB}:{sizes.max // KIB}"
    run_cli(["make", "-s", store, "-m", kib, tmp_path / "ours.caibx", blob])
    theirs = casync_index(casync, blob, tmp_path / "theirs.caibx", sizes)
    assert (tmp_path / "ours.caibx").read_bytes() == theirs
    assert store_ids(store) == {c.id.hex() for c in parse_index(theirs).chunks}
    run_cli(["extract", "-s", store, tmp_path / "ours.caibx", tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_parallel_make_of_sparse_file(casync: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans placed on the data, workers skipping holes, joined: casync's index, and only
    the index's chunks in the store."""
    monkeypatch.setattr(make, "MIN_SPAN", 128 * KIB)
    sizes = ChunkSizes(4 * KIB, 16 * KIB, 64 * KIB)
    pieces = [(n * 2 * MIB + n * 4099, 150_000) for n in range(8)]
    blob = sparse_file(tmp_path / "blob", 17 * MIB, pieces)
    store = LocalStore(str(tmp_path / "store"), create=True)
    index, _ = make.make_index(str(blob), sizes, store=store, workers=2)
    theirs = parse_index(casync_index(casync, blob, tmp_path / "theirs.caibx", sizes))
    assert [(c.start, c.size, c.id) for c in index.chunks] == \
        [(c.start, c.size, c.id) for c in theirs.chunks]
    assert store_ids(tmp_path / "store") == {c.id.hex() for c in theirs.chunks}


@pytest.mark.compiled_pass_only  # casync reads the whole GiB: once is enough
def test_make_does_not_read_holes(casync: str, tmp_path: Path) -> None:
    """A 1 GiB file with 256 KiB of data: make reads a few MiB at most (the process's read
    byte count), and the index is casync's."""
    blob = sparse_file(tmp_path / "big", 1 << 30,
                       [(n * (256 * MIB) + 12345, 64 * KIB) for n in range(4)])
    before = bytes_read()
    index, stats = make.make_index(str(blob), DEFAULT, workers=1)
    assert bytes_read() - before < 16 * MIB
    assert stats.bytes == 1 << 30
    theirs = parse_index(casync_index(casync, blob, tmp_path / "theirs.caibx", DEFAULT))
    assert [(c.start, c.size, c.id) for c in index.chunks] == \
        [(c.start, c.size, c.id) for c in theirs.chunks]


def test_verify_index_on_sparse_file(casync: str, tmp_path: Path) -> None:
    blob = sparse_file(tmp_path / "blob", 3 * MIB, [(1 * MIB, 8192), (2 * MIB, 300_000)])
    index = tmp_path / "x.caibx"
    casync_index(casync, blob, index, DEFAULT)
    run_cli(["verify-index", index, blob])
    # Data where the index says zeros ...
    changed = tmp_path / "changed"
    changed.write_bytes(blob.read_bytes())
    with open(changed, "r+b") as f:
        os.pwrite(f.fileno(), b"x", 100)
    assert "chunk 0 " in assert_clean_failure(run_cli(["verify-index", index, changed], check=False))
    # ... and a hole where the index says data: the chunk in the hole is checked too.
    with open(changed, "r+b") as f:
        os.pwrite(f.fileno(), b"\0", 100)
        punch_hole(f.fileno(), 2 * MIB, 1 * MIB)
    parsed = parse_index(index.read_bytes())
    in_hole = [n for n, c in enumerate(parsed.chunks)
               if c.start >= 2 * MIB and c.start + c.size <= 3 * MIB]
    assert in_hole, "the punched range must hold a whole chunk"
    err = assert_clean_failure(run_cli(["verify-index", index, changed], check=False))
    assert "does not match the index" in err


def test_chop_of_sparse_file(casync: str, tmp_path: Path) -> None:
    blob = sparse_file(tmp_path / "blob", 4 * MIB, [(512 * KIB, 100_000), (3 * MIB, 4096)])
    index = tmp_path / "x.caibx"
    casync_index(casync, blob, index, DEFAULT)
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, index, blob])
    ids = {c.id.hex() for c in parse_index(index.read_bytes()).chunks}
    assert store_ids(store) == ids
    run_cli(["extract", "-s", store, index, tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    # A zero chunk the store already has is not written again.
    zero_id = next(c.id for c in parse_index(index.read_bytes()).chunks if c.start == 0)
    path = store / chunk_file_name(zero_id)
    os.utime(path, ns=(1, 1))
    run_cli(["chop", "-s", store, index, blob])
    assert path.stat().st_mtime_ns == 1
    # A hole where the index holds data is refused like any other bad chunk.
    with open(blob, "r+b") as f:
        punch_hole(f.fileno(), 3 * MIB - 512 * KIB, 1 * MIB)
    (tmp_path / "store2").mkdir()
    assert_clean_failure(run_cli(["chop", "-s", tmp_path / "store2", index, blob], check=False))


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_has_holes_asks_seek_hole_only_when_blocks_are_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A file with all its bytes allocated is dense without a SEEK_HOLE walk (on tmpfs that
    walk visits every page: make asked once per span); a sparse one is still found."""
    base = tmp_path if where == "tmp" or not os.path.isdir("/dev/shm") else Path("/dev/shm")
    dense = base / f"dense-{os.getpid()}"
    try:
        dense.write_bytes(random.Random(2).randbytes(3 * MIB + 5))
        sparse = sparse_file(tmp_path / "sparse", 6 * MIB, LAYOUT)
        asked: list[int] = []
        real = os.lseek

        def lseek(fd: int, offset: int, how: int) -> int:
            asked.append(how)
            return real(fd, offset, how)

        monkeypatch.setattr(os, "lseek", lseek)
        with open(dense, "rb") as f:
            assert not has_holes(f.fileno(), dense.stat().st_size)
        assert os.SEEK_HOLE not in asked
        with open(sparse, "rb") as f:
            f.seek(1234)
            assert has_holes(f.fileno(), 6 * MIB)
            assert f.tell() == 1234  # the position is kept for the caller's reads
        assert os.SEEK_HOLE in asked
    finally:
        dense.unlink(missing_ok=True)
