"""extract with seeds: desync's fixtures and Go test cases (cmd/desync/extract_test.go,
assemble_test.go), the self seed, the null seed (holes), invalid seeds, plain-file seeds,
and the --print-stats JSON. Spec: spec/extract.md."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from desync_ref.formats.index import parse_index
from tests.conftest import assert_clean_failure, run_cli

DESYNC_KEYS = ["chunks-from-seeds", "chunks-from-store", "chunks-in-place",
               "bytes-copied-from-seeds", "bytes-cloned-from-seeds", "blocksize",
               "bytes-total", "chunks-total", "seeds"]


@pytest.fixture
def testdata(peer: Path) -> Path:
    return peer / "cmd" / "desync" / "testdata"


def ids(index: Path) -> list[bytes]:
    """The index's chunk ids, with chunks of zeros left out (the null seed has them)."""
    chunks = parse_index(index.read_bytes()).chunks
    return [c.id for c in chunks if c.id != hashlib.new("sha512_256", bytes(c.size)).digest()]


def extract(cwd: Path, *args: str | Path) -> dict[str, int]:
    proc = run_cli(["extract", "--print-stats", *args], cwd=cwd)
    stats: dict[str, int] = json.loads(proc.stdout)
    assert list(stats) == DESYNC_KEYS
    assert stats["chunks-from-seeds"] + stats["chunks-from-store"] + stats["chunks-in-place"] \
        == stats["chunks-total"]
    return stats


def store_needed(target: list[bytes], *seeds: list[bytes]) -> int:
    """Chunks a plan must fetch: first uses of ids no seed holds (later uses are self)."""
    held = {i for seed in seeds for i in seed}
    return len({i for i in target if i not in held})


# desync's TestExtractCommand cases that use seeds: each must rebuild blob1 exactly.
GO_CASES = {
    "single seed": ["--store", "blob1.store", "--seed", "blob2.caibx"],
    "multi seed": ["-s", "blob1.store", "--seed", "blob2.caibx", "--seed", "blob1.caibx"],
    "seed directory": ["-s", "blob1.store", "--seed-dir", ".", "--skip-invalid-seeds"],
    "explicit data": ["--store", "blob1.store", "--seed", "blob2_without_data.caibx:blob2"],
    "explicit data, reserved options": ["--store", "blob1.store", "--seed",
                                        "blob2_without_data.caibx:blob2:reserved_options"],
    "multi explicit data": ["-s", "blob1.store", "--seed", "blob2_without_data.caibx:blob2",
                            "--seed", "blob1_without_data.caibx:blob1"],
    "corrupted seed skipped": ["--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
                               "--skip-invalid-seeds"],
    "corrupted and valid, empty store, skip": ["--store", "empty.store", "--seed",
                                               "blob2_corrupted.caibx", "--seed", "blob1.caibx",
                                               "--skip-invalid-seeds"],
    "seed dir without skipping": ["-s", "blob1.store", "--seed-dir", ".", "--seed", "blob1.caibx"],
    "corrupted and valid, empty store": ["--store", "empty.store", "--seed",
                                         "blob2_corrupted.caibx", "--seed", "blob1.caibx"],
    "seed with all chunks": ["--store", "empty.store", "--seed", "blob1.caibx"],
    "regenerate corrupted seed": ["--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
                                  "--regenerate-invalid-seeds"],
    "regenerate corrupted index": ["--store", "empty.store", "--seed",
                                   "blob1_corrupted_index.caibx", "--regenerate-invalid-seeds"],
}


@pytest.mark.parametrize("case", list(GO_CASES))
def test_desync_extract_cases(testdata: Path, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    stats = extract(testdata, *GO_CASES[case], "blob1.caibx", out)
    assert out.read_bytes() == (testdata / "blob1").read_bytes()
    assert stats["chunks-total"] == 161 and stats["bytes-total"] == 2097152
    if "empty.store" in GO_CASES[case]:
        assert stats["chunks-from-store"] == 0


def test_blob2_seeds_blob1_and_back(testdata: Path, tmp_path: Path) -> None:
    """blob1 and blob2 as seeds for each other: exactly the chunks the seed lacks come from
    the store, the rest from the seed (the null tail from the null seed)."""
    one, two = ids(testdata / "blob1.caibx"), ids(testdata / "blob2.caibx")
    for target, seed, store, want in (("blob1", "blob2", "blob1.store", store_needed(one, two)),
                                      ("blob2", "blob1", "blob2.store", store_needed(two, one))):
        out = tmp_path / target
        stats = extract(testdata, "-s", store, "--seed", f"{seed}.caibx", f"{target}.caibx", out)
        assert out.read_bytes() == (testdata / target).read_bytes()
        assert stats["chunks-from-store"] == want
        assert 0 < want < 10
        assert stats["seeds"] == 2  # the null seed and blob2, as desync counts
        assert stats["bytes-copied-from-seeds"] > 0


INVALID = {
    "corrupted seed": ["--store", "blob1.store", "--seed", "blob2_corrupted.caibx", "blob1.caibx"],
    "missing seed": ["--store", "blob1.store", "--seed", "blob_missing", "blob1.caibx"],
    "missing seed data": ["--store", "blob1.store", "--seed", "blob2_without_data.caibx",
                          "blob1.caibx"],
    "corrupted seeds for blob2": ["--store", "empty.store", "--seed", "blob2_corrupted.caibx",
                                  "--seed", "blob1.caibx", "blob2.caibx"],
    "corrupted index and valid seed": ["--store", "blob2.store", "--seed",
                                       "blob1_corrupted_index.caibx", "--seed", "blob1.caibx",
                                       "blob2.caibx"],
    "corrupted index": ["--store", "blob2.store", "--seed", "blob1_corrupted_index.caibx",
                        "blob2.caibx"],
    "both options": ["--store", "blob1.store", "--seed", "blob1_corrupted_index.caibx",
                     "--regenerate-invalid-seeds", "--skip-invalid-seeds", "blob1.caibx"],
}


@pytest.mark.parametrize("case", list(INVALID))
def test_desync_invalid_seed_cases(testdata: Path, tmp_path: Path, case: str) -> None:
    """desync's TestExtractWithInvalidSeeds: each fails, with one line and no output."""
    proc = run_cli(["extract", *INVALID[case], tmp_path / "out"], check=False, cwd=testdata)
    assert_clean_failure(proc)
    assert list(tmp_path.iterdir()) == []


def test_invalid_seed_aborts_before_writing_in_place(testdata: Path, tmp_path: Path) -> None:
    """-k writes into the target itself: an invalid seed must stop it before any write."""
    out = tmp_path / "out"
    before = random.Random(3).randbytes(100_000)
    out.write_bytes(before)
    proc = run_cli(["extract", "-k", "--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
                    "blob1.caibx", out], check=False, cwd=testdata)
    err = assert_clean_failure(proc)
    assert "blob2_corrupted" in err and "doesn't match" in err
    assert out.read_bytes() == before


def test_in_place_with_seed(testdata: Path, tmp_path: Path) -> None:
    """-k over a file holding blob1's first half: that half stays, the rest from the seed."""
    blob1 = (testdata / "blob1").read_bytes()
    out = tmp_path / "out"
    out.write_bytes(blob1[:1_000_000])
    stats = extract(testdata, "-k", "-s", "empty.store", "--seed", "blob1.caibx", "blob1.caibx", out)
    assert out.read_bytes() == blob1
    chunks = parse_index((testdata / "blob1.caibx").read_bytes()).chunks
    assert stats["chunks-in-place"] == sum(c.end <= 1_000_000 for c in chunks)
    assert stats["chunks-from-seeds"] == sum(c.end > 1_000_000 for c in chunks)


def test_refuses_seed_that_is_the_output(testdata: Path, tmp_path: Path) -> None:
    shutil.copy(testdata / "blob1", tmp_path / "blob1")
    shutil.copy(testdata / "blob1.caibx", tmp_path / "blob1.caibx")
    for extra in ([], ["-k"]):
        proc = run_cli(["extract", *extra, "-s", testdata / "blob1.store", "--seed",
                        "blob1.caibx", testdata / "blob2.caibx", "blob1"], check=False, cwd=tmp_path)
        assert proc.returncode == 2
        assert "is the output file" in assert_clean_failure(proc)
    assert (tmp_path / "blob1").read_bytes() == (testdata / "blob1").read_bytes()
    proc = run_cli(["extract", "-s", testdata / "blob1.store", "x.caibx", "x.caibx"], check=False,
                   cwd=tmp_path)
    assert "input and output filenames match" in assert_clean_failure(proc)


def _make(tmp: Path, name: str, data: bytes) -> Path:
    blob = tmp / name
    blob.write_bytes(data)
    run_cli(["make", "-s", tmp / "store", "-m", "16:64:256", tmp / f"{name}.caibx", blob])
    return tmp / f"{name}.caibx"


def test_self_seed_copies_repeats_from_the_output(tmp_path: Path) -> None:
    """A run repeated in the blob is fetched once and copied from the output afterwards."""
    rng = random.Random(5)
    a, b = rng.randbytes(700_000), rng.randbytes(300_000)
    data = a + b + a + b + a
    index = _make(tmp_path, "rep", data)
    target = ids(index)
    out = tmp_path / "out"
    stats = extract(tmp_path, "-s", "store", index, out)
    assert out.read_bytes() == data
    assert stats["chunks-from-store"] == len(set(target))
    assert stats["chunks-from-seeds"] == len(target) - len(set(target)) > 0
    assert stats["bytes-copied-from-seeds"] > 1_000_000
    assert stats["seeds"] == 1


def _holes(path: Path) -> list[tuple[int, int]]:
    """The file's holes as (start, end), found with SEEK_HOLE/SEEK_DATA."""
    holes: list[tuple[int, int]] = []
    with path.open("rb") as f:
        fd, size, at = f.fileno(), path.stat().st_size, 0
        while at < size:
            hole = os.lseek(fd, at, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:
                data = size
            holes.append((hole, data))
            at = data
    return holes


def test_null_seed_leaves_holes(tmp_path: Path) -> None:
    rng = random.Random(6)
    zeros = 4 << 20
    data = rng.randbytes(500_000) + bytes(zeros) + rng.randbytes(500_000)
    index = _make(tmp_path, "sparse", data)
    out = tmp_path / "out"
    stats = extract(tmp_path, "-s", "store", index, out)
    assert out.read_bytes() == data
    zero_chunks = [c for c in parse_index(index.read_bytes()).chunks
                   if c.start >= 500_000 and c.end <= 500_000 + zeros]
    assert stats["chunks-from-seeds"] >= len(zero_chunks) > 10
    hole = sum(end - start for start, end in _holes(out))
    if hole == 0:
        pytest.skip(f"the file system under {tmp_path} keeps no holes")
    assert hole >= zeros - 2 * (256 << 10)
    assert out.stat().st_blocks * 512 < len(data) - zeros + (1 << 20)


def test_plain_file_seed(tmp_path: Path) -> None:
    """A seed without an index is chunked with the target's sizes; only the changed
    places come from the store."""
    rng = random.Random(7)
    old = bytearray(rng.randbytes(3_000_000))
    new = bytearray(old)
    for at in (400_000, 1_500_000, 2_600_000):
        new[at:at + 100] = rng.randbytes(100)
    (tmp_path / "old.img").write_bytes(old)
    index = _make(tmp_path, "new.img", bytes(new))
    out = tmp_path / "out"
    stats = extract(tmp_path, "-s", "store", "--seed", "old.img", index, out)
    assert out.read_bytes() == new
    assert 0 < stats["chunks-from-store"] <= 9
    assert stats["chunks-from-seeds"] > 20
    assert stats["seeds"] == 2
    # the same with an index made for the seed (the --seed INDEX:DATA form)
    run_cli(["make", "-m", "16:64:256", tmp_path / "old.caibx", tmp_path / "old.img"])
    again = extract(tmp_path, "-s", "store", "--seed", "old.caibx:old.img", index, out)
    assert again == stats and out.read_bytes() == new


def test_regenerate_picks_up_a_changed_seed(tmp_path: Path) -> None:
    """A seed edited after its index was made is re-chunked in memory and still used."""
    rng = random.Random(8)
    data = rng.randbytes(2_000_000)
    index = _make(tmp_path, "target", data)
    (tmp_path / "seed").write_bytes(data)
    run_cli(["make", "-m", "16:64:256", tmp_path / "seed.caibx", tmp_path / "seed"])
    edited = bytearray(data)
    edited[1_000_000:1_000_010] = b"x" * 10
    (tmp_path / "seed").write_bytes(edited)
    out = tmp_path / "out"
    bad = run_cli(["extract", "-s", "store", "--seed", "seed.caibx", index, out], check=False,
                  cwd=tmp_path)
    assert "seed index for seed doesn't match its data" in assert_clean_failure(bad)
    stats = extract(tmp_path, "-s", "store", "--seed", "seed.caibx", "--regenerate-invalid-seeds",
                    index, out)
    assert out.read_bytes() == data
    assert 1 <= stats["chunks-from-store"] <= 3
    skipped = extract(tmp_path, "-s", "store", "--seed", "seed.caibx", "--skip-invalid-seeds",
                      index, out)
    assert skipped["chunks-from-seeds"] == 0 and out.read_bytes() == data


def test_make_print_stats_desync_keys(tmp_path: Path) -> None:
    data = random.Random(9).randbytes(300_000)
    (tmp_path / "b").write_bytes(data)
    proc = run_cli(["make", "--print-stats", "-m", "16:64:256", tmp_path / "b.caibx", tmp_path / "b"])
    stats = json.loads(proc.stderr)
    n = len(parse_index((tmp_path / "b.caibx").read_bytes()).chunks)
    assert stats == {"ChunksAccepted": n, "ChunksProduced": n}
