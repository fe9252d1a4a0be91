"""Seeds cloned with FICLONERANGE for real: a loop-mounted XFS image (reflink=1) made by the
test, as root. Spec: spec/extract.md (cloning)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, skip_not_component


def _run(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          text=True, timeout=120).stdout


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        skip_not_component("loop mounts need root")
    for tool in ("mkfs.xfs", "xfs_io"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package xfsprogs)")
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed (Debian package mount)")
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    with image.open("wb") as f:
        f.truncate(300 << 20)
    mount.mkdir()
    device = ""
    mounted = False
    try:
        try:
            device = _run("losetup", "-f", "--show", image).strip()
        except subprocess.CalledProcessError as exc:
            skip_not_component(f"no loop device available: {exc.stderr.strip()}")
        _run("mkfs.xfs", "-q", "-m", "reflink=1", device)
        _run("mount", device, mount)
        mounted = True
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False, timeout=60)
        if device:
            subprocess.run(["losetup", "-d", device], check=False, timeout=60)


def _shared_bytes(path: Path) -> int:
    """Bytes of ``path`` in extents the file system marks shared (FIEMAP flag 0x2000)."""
    out = _run("xfs_io", "-c", "fiemap -v", path)
    shared = 0
    for line in out.splitlines():
        fields = line.split()
        if (len(fields) == 5 and re.fullmatch(r"\d+:", fields[0]) and fields[2] != "hole"
                and int(fields[-1], 16) & 0x2000):
            shared += int(fields[-2]) * 512
    return shared


def test_seed_is_cloned_on_xfs(xfs: Path) -> None:
    rng = random.Random(11)
    old = bytearray(rng.randbytes(6 << 20))
    new = bytearray(old)
    for at in (1 << 20, 3 << 20, 5 << 20):
        new[at:at + 64] = rng.randbytes(64)
    (xfs / "old").write_bytes(old)
    (xfs / "new").write_bytes(new)
    store = xfs / "store"
    run_cli(["make", "-s", store, "-m", "16:64:256", xfs / "new.caibx", xfs / "new"])
    run_cli(["make", "-m", "16:64:256", xfs / "old.caibx", xfs / "old"])
    subprocess.run(["sync"], check=True)
    out = xfs / "out"
    proc = run_cli(["extract", "--print-stats", "-s", store, "--seed", xfs / "old.caibx",
                    xfs / "new.caibx", out])
    stats = json.loads(proc.stdout)
    assert out.read_bytes() == new
    assert stats["blocksize"] == 4096
    assert stats["bytes-cloned-from-seeds"] > 4 << 20, stats
    assert stats["chunks-from-store"] > 0
    subprocess.run(["sync"], check=True)
    shared = _shared_bytes(out)
    assert shared >= stats["bytes-cloned-from-seeds"] - (1 << 20), (shared, stats)
    assert _shared_bytes(xfs / "old") > 0
