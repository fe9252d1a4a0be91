"""tar/untar/mtree against the real casync and desync's fixtures (spec/catar.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from desync_ref.formats.chunk import decompress
from fixtures.catar.trees import TREES, applied, build, fs_supports
from tests import catar_bytes as cb
from tests.conftest import run_cli
from tests.treesnap import assert_same_tree, snapshot

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


# What each flag set is there to exercise in the "basic" tree, and how casync's archive of
# the tree shows it: a record type, or (chattr) a flag in the ENTRY records.
ROW_FEATURES = {
    "default": ["user-xattr", "trusted-xattr"],
    "best": ["acl", "fcaps", "selinux", "quota-projid"],
    "privileged": ["acl", "fcaps", "selinux", "quota-projid"],
    "acl": ["acl"], "acl-16bit": ["acl"], "fcaps": ["fcaps", "user-xattr"],
    "selinux": ["selinux"], "quota": ["quota-projid"],
    "chattr": ["chattr"], "2sec-chattr": ["chattr"],
}
EVIDENCE = {"user-xattr": cb.XATTR, "trusted-xattr": cb.XATTR, "acl": cb.ACL_USER,
            "fcaps": cb.FCAPS, "selinux": cb.SELINUX, "quota-projid": cb.QUOTA_PROJID}
# Records this file system cannot produce are built by hand in test_catar_records.py.
HAND_BUILT = {"selinux", "quota-projid"}


# What the temporary file system takes (tried once, at collection, so that each row's id
# says how it was exercised; the trees fixture lives on the same file system).
ON_FS = fs_supports(Path(tempfile.gettempdir()))


def _feature_rows() -> list[object]:
    rows = []
    for flag_set, features in sorted(ROW_FEATURES.items()):
        for feature in features:
            how = "real-fs" if ON_FS[feature] else \
                "hand-built" if feature in HAND_BUILT else "not-exercised"
            rows.append(pytest.param(flag_set, feature, id=f"{flag_set}-{feature}-{how}"))
    return rows


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


def test_read_only_flag_maps_write_bits_as_casync(casync: str, tmp_path: Path) -> None:
    """``read-only`` keeps only "writable or not" of a mode: 0666/0777 or 0444/0555. The
    trees above hold no read-only file, so this tree has each combination."""
    src = tmp_path / "src"
    (src / "ro-dir").mkdir(parents=True)
    (src / "rw-dir").mkdir()
    for name, mode in (("ro", 0o444), ("rw", 0o644), ("ro-exec", 0o555), ("group-w", 0o464)):
        (src / name).write_bytes(name.encode())
        (src / name).chmod(mode)
    (src / "ro-dir").chmod(0o555)
    flags = FLAG_SETS["16bit-readonly"]
    _casync_catar(casync, flags, src, tmp_path / "want.catar")
    run_cli(["tar", *_with(flags), tmp_path / "got.catar", src])
    (src / "ro-dir").chmod(0o755)  # so pytest can clean up
    assert (tmp_path / "got.catar").read_bytes() == (tmp_path / "want.catar").read_bytes()


# What casync restores matches ``untar``'s defaults with ``--without=user-names``: desync
# (and so desync-ref) restores the numeric ids and never looks names up, while casync
# resolves an archive's user names and fails on one this machine does not know.
NUMERIC_IDS = ["--without=user-names"]


def _assert_owned_by_me(snap: dict[bytes, dict[str, object]]) -> None:
    """``untar --no-same-owner``: every node belongs to whoever ran it. (casync has no
    such mode: ``--without=privileged`` drops device nodes and labels too.)"""
    owners = {(n["uid"], n["gid"]) for n in snap.values()}
    assert owners == {(os.getuid(), os.getgid())}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _casync_extract(casync: str, archive: Path, out: Path, *options: str) -> None:
    subprocess.run([casync, "extract", *options, str(archive), str(out)], check=True,
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


@pytest.mark.parametrize("flag_set,feature", _feature_rows())
def test_flag_set_exercises_its_feature(casync: str, trees: Path, tmp_path: Path, flag_set: str,
                                        feature: str) -> None:
    """A flag-set row of test_catar_identical_to_casync tests its feature only if casync's
    archive of the "basic" tree holds it; when this file system cannot hold it, the
    archive must lack it too and the records are tested by hand in test_catar_records.py."""
    has = applied(trees / "basic")[feature]
    assert has == ON_FS[feature], "the tree lacks what the file system takes (or holds what it refuses)"
    _casync_catar(casync, FLAG_SETS[flag_set], trees / "basic", tmp_path / "want.catar")
    data = (tmp_path / "want.catar").read_bytes()
    if feature == "chattr":
        shown = any(f & cb.WITH_FLAG_NOATIME for f in cb.entry_chattr_flags(data))
    else:
        shown = cb.holds(data, EVIDENCE[feature])
    assert shown == has
    # A feature this file system cannot hold is tested on hand-built records instead
    # (test_catar_records.py); one that is neither on disk nor hand-built is untested.
    assert has or feature in HAND_BUILT, f"{feature}: neither on this file system nor hand-built"


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
    assert_same_tree(tmp_path / "o1", tmp_path / "o2")


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
    # and node for node, what untar wrote is what casync wrote from the same archive (an
    # archive without a time flag has no mtimes: both leave the time of writing)
    assert_same_tree(tmp_path / "ours", tmp_path / "theirs",
                     ignore=("mtime_ns",) if flag_set == "acl" else ())


def test_complex_round_trip(casync: str, peer: Path, tmp_path: Path) -> None:
    complex_catar = peer / "testdata" / "complex.catar"
    run_cli(["untar", complex_catar, tmp_path / "out"])
    run_cli(["tar", tmp_path / "again.catar", tmp_path / "out"])
    assert (tmp_path / "again.catar").read_bytes() == complex_catar.read_bytes()
    _casync_extract(casync, complex_catar, tmp_path / "theirs", *NUMERIC_IDS)
    assert_same_tree(tmp_path / "out", tmp_path / "theirs")


@pytest.mark.parametrize("owner", ["same-owner", "no-same-owner"])
@pytest.mark.parametrize("name", ["flat", "nested", "flatdir"])
def test_untar_old_casync_archives(casync: str, peer: Path, tmp_path: Path, name: str,
                                   owner: str) -> None:
    """desync's archives from an old casync (user names, SELinux labels, FAT flags):
    untar writes what casync extracts."""
    archive = peer / "testdata" / f"{name}.catar"
    ours = ["--no-same-owner"] if owner == "no-same-owner" else []
    run_cli(["untar", *ours, archive, tmp_path / "o"])
    _casync_extract(casync, archive, tmp_path / "theirs", *NUMERIC_IDS)
    if owner == "no-same-owner":
        _assert_owned_by_me(assert_same_tree(tmp_path / "o", tmp_path / "theirs",
                                             ignore=("uid", "gid")))
    else:
        assert_same_tree(tmp_path / "o", tmp_path / "theirs")


def test_untar_tree_caidx(casync: str, peer: Path, tmp_path: Path) -> None:
    d = peer / "cmd" / "desync" / "testdata"
    run_cli(["untar", "-s", d / "tree.store", "-i", d / "tree.caidx", tmp_path / "o"])
    _casync_extract(casync, d / "tree.caidx", tmp_path / "theirs", *NUMERIC_IDS,
                    f"--store={d / 'tree.store'}")
    assert_same_tree(tmp_path / "o", tmp_path / "theirs")
    run_cli(["untar", d / "tree.catar", tmp_path / "o2"])
    _casync_extract(casync, d / "tree.catar", tmp_path / "theirs2", *NUMERIC_IDS)
    assert_same_tree(tmp_path / "o2", tmp_path / "theirs2")
    # the ownership and permission options: owner is whoever extracts, modes lose the umask
    run_cli(["untar", "-s", d / "tree.store", "-i", "--no-same-owner", "--no-same-permissions",
             d / "tree.caidx", tmp_path / "o3"])
    ours = assert_same_tree(tmp_path / "o3", tmp_path / "theirs", ignore=("uid", "gid", "mode"))
    _assert_owned_by_me(ours)
    theirs = snapshot(tmp_path / "theirs")
    assert _umask() and {p: int(n["mode"], 8) for p, n in ours.items() if n["type"] != "l"} == {
        p: int(n["mode"], 8) & ~_umask() for p, n in theirs.items() if n["type"] != "l"}


def test_gnu_tar_output(peer: Path, tmp_path: Path) -> None:
    out = run_cli(["untar", "--output-format", "gnu-tar", peer / "testdata" / "complex.catar", "-"])
    assert out.stdout == (peer / "testdata" / "complex.gnu-tar").read_bytes()


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
