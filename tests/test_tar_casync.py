"""tar/untar/mtree against the real casync and desync's fixtures (spec/catar.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from desync_ref.formats.chunk import decompress
from fixtures.catar.trees import TREES, build
from tests.conftest import run_cli

DEFAULT = ["32bit-uids", "nsec-time", "permissions", "symlinks", "device-nodes", "fifos",
           "sockets", "xattrs"]
FLAG_SETS = {
    "default": DEFAULT,
    "best": ["best"],
    "unix": ["unix"],
    "fat": ["fat"],
    "fuse": ["fuse"],
    "privileged": ["privileged"],
    "chattr": ["chattr", "permissions"],
    "fat-attrs": ["fat-attrs", "sec-time"],
    "16bit-readonly": ["16bit-uids", "sec-time", "read-only"],
    "names-usec": ["user-names", "usec-time"],
    "acl": ["acl", "symlinks"],
    "acl-16bit": ["acl", "16bit-uids"],
    "fcaps": ["fcaps", "xattrs"],
    "selinux": ["selinux", "permissions"],
    "quota": ["quota-projid", "permissions"],
    "2sec-chattr": ["2sec-time", "chattr", "permissions"],
}


def _with(names: list[str]) -> list[str]:
    return [f"--with={n}" for n in names]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trees")
    for name in TREES:
        build(root, name)
    return root


def _casync_catar(casync: str, flags: list[str], src: Path, out: Path) -> None:
    subprocess.run([casync, "make", *_with(flags), str(out), str(src)], check=True,
                   capture_output=True)


@pytest.mark.parametrize("flag_set", sorted(FLAG_SETS))
@pytest.mark.parametrize("tree", TREES)
def test_catar_identical_to_casync(casync: str, trees: Path, tmp_path: Path, tree: str,
                                   flag_set: str) -> None:
    flags = FLAG_SETS[flag_set]
    want, got = tmp_path / "casync.catar", tmp_path / "ours.catar"
    _casync_catar(casync, flags, trees / tree, want)
    args = ["tar", got, trees / tree] if flag_set == "default" else \
        ["tar", *_with(flags), got, trees / tree]
    run_cli(args)
    assert got.read_bytes() == want.read_bytes()


def _store_chunks(store: Path) -> dict[str, bytes]:
    return {p.name: decompress(p.read_bytes()) for p in store.rglob("*.cacnk")}


@pytest.mark.parametrize("flag_set", ["default", "best"])
def test_caidx_identical_to_casync(casync: str, trees: Path, tmp_path: Path, flag_set: str) -> None:
    src = build(tmp_path / "w", "basic")
    (src / "big").write_bytes(bytes(range(256)) * 4096 + b"tail" * 100000)
    subprocess.run([casync, "make", *_with(FLAG_SETS[flag_set]), f"--store={tmp_path / 's1'}",
                    str(tmp_path / "a.caidx"), str(src)], check=True, capture_output=True)
    extra = [] if flag_set == "default" else _with(FLAG_SETS[flag_set])
    run_cli(["tar", "-i", "-s", tmp_path / "s2", *extra, tmp_path / "b.caidx", src])
    assert (tmp_path / "b.caidx").read_bytes() == (tmp_path / "a.caidx").read_bytes()
    assert _store_chunks(tmp_path / "s1") == _store_chunks(tmp_path / "s2")
    # untar -i restores what casync extracts
    run_cli(["untar", "-i", "-s", tmp_path / "s2", tmp_path / "b.caidx", tmp_path / "o1"])
    subprocess.run([casync, "extract", *_with(FLAG_SETS[flag_set]), f"--store={tmp_path / 's1'}",
                    str(tmp_path / "a.caidx"), str(tmp_path / "o2")], check=True,
                   capture_output=True)
    _same_tree(casync, flag_set, tmp_path / "o1", tmp_path / "o2", tmp_path)


def _same_tree(casync: str, flag_set: str, a: Path, b: Path, work: Path) -> None:
    flags = FLAG_SETS[flag_set]
    _casync_catar(casync, flags, a, work / "ta.catar")
    _casync_catar(casync, flags, b, work / "tb.catar")
    assert (work / "ta.catar").read_bytes() == (work / "tb.catar").read_bytes()


@pytest.mark.parametrize("flag_set", ["default", "best", "acl", "unix"])
def test_untar_restores_exactly(casync: str, trees: Path, tmp_path: Path, flag_set: str) -> None:
    """untar of casync's catar, re-archived by casync, gives the same bytes (interop one
    way); casync extracting our catar does too (the other way)."""
    flags = FLAG_SETS[flag_set]
    _casync_catar(casync, flags, trees / "basic", tmp_path / "want.catar")
    run_cli(["untar", tmp_path / "want.catar", tmp_path / "ours"])
    _casync_catar(casync, flags, tmp_path / "ours", tmp_path / "again.catar")
    assert (tmp_path / "again.catar").read_bytes() == (tmp_path / "want.catar").read_bytes()
    subprocess.run([casync, "extract", *_with(flags), str(tmp_path / "want.catar"),
                    str(tmp_path / "theirs")], check=True, capture_output=True)
    run_cli(["tar", *_with(flags), tmp_path / "mine.catar", tmp_path / "theirs"])
    assert (tmp_path / "mine.catar").read_bytes() == (tmp_path / "want.catar").read_bytes()


def test_complex_round_trip(peer: Path, tmp_path: Path) -> None:
    complex_catar = peer / "testdata" / "complex.catar"
    run_cli(["untar", complex_catar, tmp_path / "out"])
    run_cli(["tar", tmp_path / "again.catar", tmp_path / "out"])
    assert (tmp_path / "again.catar").read_bytes() == complex_catar.read_bytes()


@pytest.mark.parametrize("name", ["flat", "nested", "flatdir"])
def test_untar_old_casync_archives(peer: Path, tmp_path: Path, name: str) -> None:
    run_cli(["untar", "--no-same-owner", peer / "testdata" / f"{name}.catar", tmp_path / "o"])
    assert any((tmp_path / "o").iterdir())


def test_untar_tree_caidx(peer: Path, tmp_path: Path) -> None:
    d = peer / "cmd" / "desync" / "testdata"
    run_cli(["untar", "-s", d / "tree.store", "-i", "--no-same-owner", "--no-same-permissions",
             d / "tree.caidx", tmp_path / "o"])
    assert (tmp_path / "o" / "subdir1" / "f1").read_bytes() == b"file in subdir1\n"
    run_cli(["untar", "--no-same-owner", d / "tree.catar", tmp_path / "o2"])


def test_gnu_tar_output(peer: Path, tmp_path: Path) -> None:
    out = run_cli(["untar", "--output-format", "gnu-tar", peer / "testdata" / "complex.catar", "-"])
    assert out.stdout == (peer / "testdata" / "complex.gnu-tar").read_bytes()


def test_mtree(peer: Path, tmp_path: Path, trees: Path) -> None:
    out = run_cli(["mtree", peer / "testdata" / "complex.catar"]).stdout.decode()
    lines = out.splitlines()
    assert lines[0] == "#mtree v1.0"
    assert lines[1] == ". type=dir mode=0775 uid=1000 gid=1000 time=1564851970.494945701"
    assert any(line.startswith("relative.symlink type=link mode=0777 target=test1.file ")
               for line in lines)
    run_cli(["tar", tmp_path / "a.catar", trees / "awkward"])
    from_dir = run_cli(["mtree", trees / "awkward"]).stdout
    assert from_dir == run_cli(["mtree", tmp_path / "a.catar"]).stdout
    assert b"with\\040space" in from_dir and b"\\377\\376invalid-utf8" in from_dir


@pytest.mark.parametrize("time_flag", ["usec-time", "nsec-time"])
def test_tar_stream_input(casync: str, tmp_path: Path, time_flag: str) -> None:
    """A GNU/PAX tar of a tree (incl. xattrs, devices, foreign owners) gives the catar
    casync makes of the tree, byte for byte. The tree leaves out the socket (not in tar
    streams), the empty xattr (GNU tar drops it) and the nodump file (casync skips it)."""
    src = build(tmp_path, "basic", tar_stream=True)
    tar = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=posix", "-C",
                          str(src), "-cf", "-", "--sort=name", "."], capture_output=True)
    if tar.returncode != 0:
        pytest.skip(f"GNU tar unusable: {tar.stderr.decode()[:100]}")
    flags = ["32bit-uids", time_flag, "permissions", "symlinks", "device-nodes", "fifos",
             "xattrs"]
    _casync_catar(casync, flags, src, tmp_path / "want.catar")
    run_cli(["tar", "--input-format", "tar", *_with(flags), tmp_path / "got.catar", "-"],
            input=tar.stdout)
    assert (tmp_path / "got.catar").read_bytes() == (tmp_path / "want.catar").read_bytes()


def test_python_api_via_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "desync_ref", "tar", "--help"],
                          capture_output=True)
    assert proc.returncode == 0 and b"--with" in proc.stdout
