"""extract onto a block device: a loop device over a sparse file made here, as root.

The device is written in place (never truncated, no holes punched: chunks of zeros are
written as zeros unless already zero there), with and without ``-k``; a device smaller than
the index is refused; a seed that is the device itself is refused. Spec: spec/extract.md
"In place and devices".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_ref.formats.index import parse_index
from tests.conftest import assert_clean_failure, run_cli, skip_not_component

pytestmark = pytest.mark.compiled_pass_only

ZEROS = 768 * 1024  # more than twice the largest chunk: whole chunks of zeros
SIZE = 256 * 1024 + ZEROS + 256 * 1024  # the blob
DEVICE = 2 * SIZE  # the loop device: bigger than the blob


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Path]:
    """A blob with a run of zeros in the middle, its index and its store."""
    base = tmp_path_factory.mktemp("blob")
    rng = random.Random(12)
    data = rng.randbytes(256 * 1024) + bytes(ZEROS) + rng.randbytes(256 * 1024)
    (base / "blob").write_bytes(data)
    run_cli(["make", "-m", "16:64:256", "-s", base / "store", base / "blob.caibx", base / "blob"])
    chunks = parse_index((base / "blob.caibx").read_bytes()).chunks
    zero_ids = {hashlib.new("sha512_256", bytes(c.size)).digest() for c in chunks}
    assert any(c.id in zero_ids for c in chunks), "the blob must have a chunk of zeros"
    return base / "blob.caibx", data, base / "store"


def _losetup(*args: str) -> str:
    proc = subprocess.run(["losetup", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip())
    return proc.stdout.strip()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over a sparse backing file filled with a pattern (so zeros must be
    written); yields (device, backing file)."""
    if os.geteuid() != 0:
        skip_not_component("loop devices need root")
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed (Debian package 'mount')")
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(DEVICE)
        f.write(b"\xa5" * SIZE)  # old content over the part the blob will cover
    try:
        device = _losetup("-f", "--show", str(backing))
    except OSError as exc:
        skip_not_component(f"no loop device support here: {exc}")
    try:
        yield device, backing
    finally:
        _losetup("-d", device)


def extract(*args: str | Path) -> dict[str, int]:
    stats: dict[str, int] = json.loads(run_cli(["extract", "--print-stats", *args]).stdout)
    return stats


def device_bytes(device: str, length: int) -> bytes:
    with open(device, "rb") as f:
        return f.read(length)


@pytest.mark.parametrize("in_place", [False, True], ids=["plain", "-k"])
def test_extract_onto_device(blob: tuple[Path, bytes, Path], loop: tuple[str, Path],
                             in_place: bool) -> None:
    index, data, store = blob
    device, backing = loop
    tail = device_bytes(device, DEVICE)[SIZE:]
    stats = extract("-s", store, *(["-k"] if in_place else []), index, device)
    assert device_bytes(device, SIZE) == data  # zeros included: written over the pattern
    assert device_bytes(device, DEVICE)[SIZE:] == tail  # nothing past the blob touched
    assert os.path.exists(device) and not Path(device).is_file()  # still the device node
    assert backing.stat().st_size == DEVICE  # not truncated
    assert stats["bytes-cloned-from-seeds"] == 0
    # Run again with -k: everything is already in place, so nothing is written.
    again = extract("-s", store, "-k", index, device)
    assert again["chunks-in-place"] == again["chunks-total"]
    assert device_bytes(device, SIZE) == data


def test_zero_chunks_kept_when_already_zero(blob: tuple[Path, bytes, Path],
                                            loop: tuple[str, Path]) -> None:
    """-k over a device that already holds the blob except one chunk: only that chunk is
    written, zeros in place stay."""
    index, data, store = blob
    device, _ = loop
    with open(device, "r+b") as f:
        f.write(data)
        f.seek(1000)
        f.write(b"\x00" * 10)  # damage the first chunk
    stats = extract("-s", store, "-k", index, device)
    assert stats["chunks-from-store"] == 1
    assert stats["chunks-in-place"] == stats["chunks-total"] - 1
    assert device_bytes(device, SIZE) == data


def test_device_too_small(blob: tuple[Path, bytes, Path], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_not_component("loop devices need root")
    index, _, store = blob
    backing = tmp_path / "small.img"
    with open(backing, "wb") as f:
        f.truncate(SIZE // 2)
    try:
        device = _losetup("-f", "--show", str(backing))
    except OSError as exc:
        skip_not_component(f"no loop device support here: {exc}")
    try:
        before = device_bytes(device, SIZE // 2)
        proc = run_cli(["extract", "-s", store, "-k", index, device], check=False)
        err = assert_clean_failure(proc)
        assert "too small" in err and device in err, err
        assert proc.returncode == 2
        assert device_bytes(device, SIZE // 2) == before
    finally:
        _losetup("-d", device)


def test_seed_is_the_device(blob: tuple[Path, bytes, Path], loop: tuple[str, Path],
                            tmp_path: Path) -> None:
    index, _, store = blob
    device, _ = loop
    proc = run_cli(["extract", "-s", store, "-k", "--seed", f"{index}:{device}", index, device],
                   check=False)
    err = assert_clean_failure(proc)
    assert "is the output file" in err, err
    # The same device under another name (a symlink) is caught too.
    link = tmp_path / "dev-link"
    link.symlink_to(device)
    proc = run_cli(["extract", "-s", store, "-k", "--seed", f"{index}:{link}", index, device],
                   check=False)
    assert "is the output file" in assert_clean_failure(proc)


def test_character_device_refused(blob: tuple[Path, bytes, Path]) -> None:
    """A temp file renamed over /dev/null would replace the node: refused instead."""
    index, _, store = blob
    proc = run_cli(["extract", "-s", store, index, os.devnull], check=False)
    err = assert_clean_failure(proc)
    assert "not a regular file or a block device" in err, err
    assert Path(os.devnull).is_char_device()
