"""``digest`` against casync's ``digest`` on the same inputs: stdout byte for byte
(spec/cli.md § "digest")."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from desync_ref.formats.index import parse_index
from tests.conftest import assert_clean_failure, run_cli

pytestmark = pytest.mark.compiled_pass_only

# desync_ref's default flag set, spelled for casync (spec/deviations.md § catar archives).
WITH = ["--with=32bit-uids", "--with=nsec-time", "--with=permissions", "--with=symlinks",
        "--with=device-nodes", "--with=fifos", "--with=sockets", "--with=xattrs"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, casync: str) -> Path:
    """A blob, a tree (with a .caexclude) and casync's archives and indexes of both, in
    both digests, their chunks in ``store``."""
    base = tmp_path_factory.mktemp("digest")
    rng = random.Random(16)
    (base / "blob").write_bytes(rng.randbytes(400_000))
    tree = base / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "big").write_bytes(rng.randbytes(200_000))
    (tree / "a").write_bytes(b"hello\n")
    (tree / "skip.tmp").write_bytes(b"left out")
    (tree / ".caexclude").write_bytes(b"*.tmp\n")
    os.symlink("a", tree / "link")
    with contextlib.suppress(OSError):  # without user xattrs the digests still compare
        os.setxattr(tree / "a", "user.k", b"v")
    store = f"--store={base / 'store'}"
    for digest in ("sha512-256", "sha256"):
        tag = digest.replace("-", "")
        make = [casync, f"--digest={digest}", "make", *WITH]
        subprocess.run([*make, str(base / f"tree-{tag}.catar"), str(tree)], check=True,
                       capture_output=True)
        subprocess.run([*make, store, str(base / f"tree-{tag}.caidx"), str(tree)], check=True,
                       capture_output=True)
        subprocess.run([*make, store, str(base / f"blob-{tag}.caibx"), str(base / "blob")],
                       check=True, capture_output=True)
    return base


def _casync(casync: str, *args: str | Path) -> bytes:
    return subprocess.run([casync, *map(str, args)], check=True, capture_output=True).stdout


def _ours(*args: str | Path) -> bytes:
    return run_cli(["digest", *args]).stdout


@pytest.mark.parametrize("name", ["blob", "tree-sha512256.catar", "tree-sha256.catar"])
def test_file(casync: str, work: Path, name: str) -> None:
    assert _ours(work / name) == _casync(casync, "digest", work / name)


def test_blob_sha256(casync: str, work: Path) -> None:
    theirs = _casync(casync, "--digest=sha256", "digest", work / "blob")
    assert run_cli(["--digest", "sha256", "digest", work / "blob"]).stdout == theirs
    assert theirs != _casync(casync, "digest", work / "blob")


@pytest.mark.parametrize("name", ["blob-sha512256.caibx", "blob-sha256.caibx",
                                  "tree-sha512256.caidx", "tree-sha256.caidx"])
def test_index_with_store(casync: str, work: Path, name: str) -> None:
    theirs = _casync(casync, "digest", f"--store={work / 'store'}", work / name)
    assert _ours("-s", work / "store", work / name) == theirs


def test_index_default_store(casync: str, work: Path, tmp_path: Path) -> None:
    shutil.copytree(work / "store", tmp_path / "default.castr")
    shutil.copy(work / "tree-sha512256.caidx", tmp_path / "t.caidx")
    assert _ours(tmp_path / "t.caidx") == _casync(casync, "digest", tmp_path / "t.caidx")


@pytest.mark.parametrize("flags", [[], ["--without=xattrs", "--without=permissions"],
                                   ["--with=unix"], ["--with=sec-time", "--with=read-only"]],
                         ids=["default", "without", "with-unix", "with-sec-readonly"])
def test_directory(casync: str, work: Path, flags: list[str]) -> None:
    casync_flags = [f for f in flags if f.startswith("--with=")] or WITH
    casync_flags += [f for f in flags if f.startswith("--without=")]
    theirs = _casync(casync, "digest", *casync_flags, work / "tree")
    assert _ours(*flags, work / "tree") == theirs


def test_directory_digest_is_of_its_catar(work: Path, tmp_path: Path) -> None:
    run_cli(["tar", tmp_path / "t.catar", work / "tree"])
    assert _ours(work / "tree") == _ours(tmp_path / "t.catar")


def test_damaged_archive_fails(work: Path, tmp_path: Path) -> None:
    # casync 2 never returns on this input (it spins; spec/deviations.md), so no oracle here.
    damaged = tmp_path / "cut.catar"
    damaged.write_bytes((work / "tree-sha512256.catar").read_bytes()[:-10])
    assert "truncated" in assert_clean_failure(run_cli(["digest", damaged], check=False))


def test_missing_chunk_fails(work: Path, tmp_path: Path) -> None:
    shutil.copytree(work / "store", tmp_path / "store")
    chunk_id = parse_index((work / "blob-sha512256.caibx").read_bytes()).chunks[1].id.hex()
    victim = tmp_path / "store" / chunk_id[:4] / f"{chunk_id}.cacnk"
    victim.unlink()
    proc = run_cli(["digest", "-s", tmp_path / "store", work / "blob-sha512256.caibx"], check=False)
    err = assert_clean_failure(proc)
    assert victim.name.removesuffix(".cacnk") in err
