"""extract's holes (spec/extract.md § "Holes"): zero blocks of the output are holes, as casync
leaves them, measured against casync's own extract of the same index; ``--punch-holes=no``
allocates every byte; ``-k`` over old data punches where the new version has zeros.

The index and store are made by casync, so the pure-Python pass does not chunk.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

KIB = 1024


def _blob() -> bytes:
    """Data stretches whose chunks end in zeros, whole zero chunks, a zero tail."""
    rng = random.Random(17)
    parts = [rng.randbytes(200 * KIB), bytes(1024 * KIB), rng.randbytes(300 * KIB + 5),
             bytes(2048 * KIB), rng.randbytes(100 * KIB), bytes(40 * KIB),
             rng.randbytes(70 * KIB), bytes(1024 * KIB + 3)]
    return b"".join(parts)


@pytest.fixture
def made(tmp_path: Path, casync: str) -> tuple[Path, Path, bytes, int]:
    """(index, store, blob, st_blocks of casync's extract of the index)."""
    data = _blob()
    (tmp_path / "blob").write_bytes(data)
    subprocess.run([casync, "make", f"--store={tmp_path / 's'}", str(tmp_path / "x.caibx"),
                    str(tmp_path / "blob")], check=True, capture_output=True)
    subprocess.run([casync, "extract", f"--store={tmp_path / 's'}", str(tmp_path / "x.caibx"),
                    str(tmp_path / "casync.out")], check=True, capture_output=True)
    assert (tmp_path / "casync.out").read_bytes() == data
    theirs = os.stat(tmp_path / "casync.out").st_blocks
    if theirs * 512 >= len(data):
        pytest.skip("the file system here keeps no holes (casync's output is not sparse)")
    return tmp_path / "x.caibx", tmp_path / "s", data, theirs


def test_extract_is_no_larger_on_disk_than_casyncs(made: tuple[Path, Path, bytes, int],
                                                    tmp_path: Path) -> None:
    index, store, data, theirs = made
    run_cli(["extract", "-s", store, index, tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == data
    assert os.stat(tmp_path / "out").st_blocks <= theirs


def test_punch_holes_no_writes_every_byte(made: tuple[Path, Path, bytes, int],
                                          tmp_path: Path) -> None:
    index, store, data, _ = made
    run_cli(["extract", "--punch-holes=no", "-s", store, index, tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == data
    assert os.stat(tmp_path / "out").st_blocks * 512 >= len(data)


def test_in_place_over_data_punches_where_the_new_version_has_zeros(
        made: tuple[Path, Path, bytes, int], tmp_path: Path) -> None:
    index, store, data, theirs = made
    out = tmp_path / "out"
    out.write_bytes(random.Random(3).randbytes(len(data)))  # fully allocated, all different
    out_fd = os.open(out, os.O_RDONLY)
    os.fsync(out_fd)  # allocated for real, not only reserved
    os.close(out_fd)
    assert os.stat(out).st_blocks * 512 >= len(data)
    run_cli(["extract", "-k", "-s", store, index, out])
    assert out.read_bytes() == data
    assert os.stat(out).st_blocks <= theirs


def test_in_place_with_holes_off_keeps_zeros_written(made: tuple[Path, Path, bytes, int],
                                                     tmp_path: Path) -> None:
    index, store, data, _ = made
    out = tmp_path / "out"
    out.write_bytes(random.Random(4).randbytes(len(data)))
    run_cli(["extract", "-k", "--punch-holes=no", "-s", store, index, out])
    assert out.read_bytes() == data
    assert os.stat(out).st_blocks * 512 >= len(data)


def test_punch_holes_value_must_be_a_boolean(made: tuple[Path, Path, bytes, int],
                                             tmp_path: Path) -> None:
    index, store, _, _ = made
    proc = run_cli(["extract", "--punch-holes=maybe", "-s", store, index, tmp_path / "out"],
                   check=False)
    assert proc.returncode == 2
    assert "maybe" in assert_clean_failure(proc)
    assert not (tmp_path / "out").exists()
