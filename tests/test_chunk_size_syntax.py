"""casync's ``--chunk-size=`` syntax on ``-m`` (make, tar, chunk): the same value gives the
index casync makes (spec/cli.md § "Chunk sizes")."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from desync_ref.cli.chunk_size import parse_size
from desync_ref.formats.index import parse_index
from tests.conftest import assert_clean_failure, run_cli

# Each is given to casync as --chunk-size=VALUE and to desync-ref as -m VALUE.
CASYNC_VALUES = ["32K", "100000", "auto", "1M512K", "16K:64K:256K", "1.5K:8K:0.25M",
                 "65536B", "3000:5000:9000B", "2 K: 8K:32K"]


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blob") / "blob"
    path.write_bytes(random.Random(16).randbytes(600_000))
    return path


def _casync_index(casync: str, tmp_path: Path, value: str, *args: str, suffix: str = ".caibx") -> bytes:
    out = tmp_path / f"casync{suffix}"
    subprocess.run([casync, "make", f"--chunk-size={value}", f"--store={tmp_path / 'cstore'}",
                    str(out), *args], check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("value", CASYNC_VALUES)
def test_make_index_equals_casync(casync: str, tmp_path: Path, blob: Path, value: str) -> None:
    ours = tmp_path / "ours.caibx"
    run_cli(["make", "-m", value, ours, blob])
    assert ours.read_bytes() == _casync_index(casync, tmp_path, value, str(blob))


def test_desync_triple_keeps_kib(casync: str, tmp_path: Path, blob: Path) -> None:
    # Three plain numbers are desync's KiB, never casync's bytes.
    ours = tmp_path / "ours.caibx"
    run_cli(["make", "-m", "4:16:64", ours, blob])
    assert ours.read_bytes() == _casync_index(casync, tmp_path, "4K:16K:64K", str(blob))


def test_tar_index_equals_casync(casync: str, tmp_path: Path, blob: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").write_bytes(blob.read_bytes())
    ours = tmp_path / "ours.caidx"
    run_cli(["tar", "-i", "-m", "12K", "-s", tmp_path / "store", ours, tree])
    with_flags = ["--with=32bit-uids", "--with=nsec-time", "--with=permissions", "--with=symlinks",
                  "--with=device-nodes", "--with=fifos", "--with=sockets", "--with=xattrs"]
    assert ours.read_bytes() == _casync_index(casync, tmp_path, "12K", *with_flags, str(tree),
                                                suffix=".caidx")


def test_chunk_lists_casync_chunks(casync: str, tmp_path: Path, blob: Path) -> None:
    theirs = parse_index(_casync_index(casync, tmp_path, "20K", str(blob)))
    listing = run_cli(["chunk", "-m", "20K", blob]).stdout.decode().splitlines()
    assert listing == [f"{c.start}\t{c.size}\t{c.id.hex()}" for c in theirs.chunks]


@pytest.mark.parametrize("value", ["1:2", "0", "abc", "5K:4K:6K", "1K:2K:200M", "1 2", "-5",
                                   "129M", "64k", "1K:2K:3K:4K", "", "4:5:6B", "1"])
def test_refused_like_casync(casync: str, tmp_path: Path, blob: Path, value: str) -> None:
    theirs = subprocess.run([casync, "make", f"--chunk-size={value}", str(tmp_path / "c.caibx"),
                             str(blob)], capture_output=True)
    assert theirs.returncode != 0
    proc = run_cli(["make", "-m", value, tmp_path / "o.caibx", blob], check=False)
    assert_clean_failure(proc)
    assert proc.returncode == 2
    assert not (tmp_path / "o.caibx").exists()


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("17", 17), ("1K", 1024), ("1.5K", 1536), ("0.3K", 307), ("1G", 1 << 30),
    ("1M512K", (1 << 20) + (512 << 10)), ("1K2", 1026), ("10.M", 10 << 20), (" 5 B", 5),
    ("16E", None), ("1K1M", None), ("1B1", 2), ("x", None), ("1.K.", None), ("-1", None)])
def test_parse_size(text: str, size: int | None) -> None:
    """systemd's parse_size as casync links it (src/parse-util.c)."""
    assert parse_size(text) == size
