"""tar and untar with sparse files: the catar is casync's byte for byte while only the data
regions are read; untar leaves zero blocks as holes (no more blocks than casync's own
extract) unless ``--punch-holes=no``. Spec: spec/catar.md § "Files with holes"."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from desync_ref.fs import walk
from desync_ref.fs.holes import has_holes
from desync_ref.operations.tar import archive_flags, write_catar
from tests.conftest import bytes_read, run_cli

pytestmark = pytest.mark.compiled_pass_only  # no kernel: tree walking and file writing

KIB = 1024
MIB = 1024 * KIB
DEFAULT = ["32bit-uids", "nsec-time", "permissions", "symlinks", "device-nodes", "fifos",
           "sockets", "xattrs"]
SPARSE_FILES = {  # name: (length, [(offset, size) of random data])
    "image": (6 * MIB, [(0, 5000), (1 * MIB + 123, 70_000), (4 * MIB, 4096)]),
    "tail-hole": (3 * MIB + 17, [(8192, 100)]),
    "all-hole": (2 * MIB, []),
    "data-at-end": (1 * MIB + 5, [(1 * MIB - 300, 305)]),
}


def sparse_tree(root: Path) -> Path:
    rng = random.Random(5)
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for name, (length, pieces) in SPARSE_FILES.items():
        with open(src / "sub" / name, "wb") as f:
            f.truncate(length)
            for offset, size in pieces:
                os.pwrite(f.fileno(), rng.randbytes(size), offset)
    (src / "dense").write_bytes(rng.randbytes(10_000) + bytes(50_000))
    (src / "empty").write_bytes(b"")
    with open(src / "sub" / "image", "rb") as f:
        if not has_holes(f.fileno(), 6 * MIB):
            pytest.skip("the file system does not report holes")
    return src


def casync_catar(casync: str, src: Path, out: Path) -> None:
    subprocess.run([casync, "make", *[f"--with={n}" for n in DEFAULT], str(out), str(src)],
                   check=True, capture_output=True)


def test_tar_of_sparse_tree_equals_casync(casync: str, tmp_path: Path) -> None:
    src = sparse_tree(tmp_path)
    casync_catar(casync, src, tmp_path / "theirs.catar")
    run_cli(["tar", tmp_path / "ours.catar", src])
    assert (tmp_path / "ours.catar").read_bytes() == (tmp_path / "theirs.catar").read_bytes()


def test_tar_reads_only_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 256 MiB file holding 64 KiB of data: the catar stream is the one the plain read
    gives, and the process read a few MiB at most to make it."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as f:
        f.truncate(256 * MIB)
        os.pwrite(f.fileno(), random.Random(2).randbytes(64 * KIB), 100 * MIB + 7)
    flags = archive_flags()

    def digest_of_catar() -> tuple[str, int]:
        h = hashlib.sha256()
        before = bytes_read()
        write_catar(str(src), h.update, flags)
        return h.hexdigest(), bytes_read() - before

    sparse, read = digest_of_catar()
    assert read < 8 * MIB
    monkeypatch.setattr(walk, "has_holes", lambda fd, size: False)
    full, read_full = digest_of_catar()
    assert read_full >= 256 * MIB  # the plain path does read the holes
    assert sparse == full


def _blocks(path: Path) -> int:
    return path.stat().st_blocks


def test_untar_writes_holes(casync: str, tmp_path: Path) -> None:
    src = sparse_tree(tmp_path)
    casync_catar(casync, src, tmp_path / "x.catar")
    subprocess.run([casync, "extract", "--without=privileged", str(tmp_path / "x.catar"),
                    str(tmp_path / "casync-out")], check=True, capture_output=True)
    run_cli(["untar", "--no-same-owner", tmp_path / "x.catar", tmp_path / "ours"])
    run_cli(["untar", "--no-same-owner", "--punch-holes=no", tmp_path / "x.catar",
             tmp_path / "full"])
    for name, (length, _) in SPARSE_FILES.items():
        ours, theirs, full = (tmp_path / d / "sub" / name for d in ("ours", "casync-out", "full"))
        original = (src / "sub" / name).read_bytes()
        assert ours.read_bytes() == original == full.read_bytes()
        assert _blocks(ours) <= _blocks(theirs), name
        assert _blocks(full) * 512 >= length, name  # every byte written
    assert _blocks(tmp_path / "ours" / "sub" / "all-hole") == 0
    assert (tmp_path / "ours" / "dense").read_bytes() == (src / "dense").read_bytes()
    # The restored tree archives to the same catar (times, modes, sizes all restored).
    casync_catar(casync, tmp_path / "ours", tmp_path / "again.catar")
    assert (tmp_path / "again.catar").read_bytes() == (tmp_path / "x.catar").read_bytes()


def test_punch_holes_value_is_checked(tmp_path: Path) -> None:
    proc = run_cli(["untar", "--punch-holes=maybe", tmp_path / "x.catar", tmp_path / "out"],
                   check=False)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr


def test_zero_blocks_finds_exactly_the_aligned_zero_blocks() -> None:
    """fs/holes.zero_blocks (untar's hole finder) against the definition, block by block."""
    from desync_ref.fs.holes import zero_blocks

    def definition(data: bytes, offset: int, block: int) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        for start in range((-offset) % block, len(data) - block + 1, block):
            if data[start:start + block] == bytes(block):
                if runs and runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], start + block)
                else:
                    runs.append((start, start + block))
        return runs

    rng = random.Random(3)
    for _ in range(500):
        data = b"".join(bytes(n) if rng.random() < 0.6 else rng.randbytes(n)
                        for n in rng.choices([1, 100, 4095, 4096, 4097, 8192, 20000],
                                             k=rng.randrange(0, 6)))
        offset, block = rng.randrange(0, 10000), rng.choice([512, 4096])
        for form in (data, memoryview(data), bytearray(data)):
            assert zero_blocks(form, offset, block) == definition(data, offset, block)
