"""``mtree`` against desync's format (``mtreefs.go``, spec/catar.md § "mtree output").

The expected lines are written here, by this file's own formatter following desync's
``MtreeFS`` (``CreateDir``/``CreateFile``/``CreateSymlink``/``CreateDevice`` and
``mtreeFilename`` at desync ff9ccfa), from facts found without desync-ref:

* for archives, ``casync mtree`` (casync parses the archive; its listing is re-formatted
  into desync's lines: desync prints ``mode`` as Go's ``FileMode.Perm()`` (0777 bits only),
  orders the keys differently, writes ``target=`` for ``link=``, pads nanoseconds its own
  way and leaves fifos and sockets out);
* for a directory, ``os.lstat`` and ``hashlib`` on the tree itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from fixtures.catar.trees import build
from tests.conftest import run_cli
from tests.treesnap import chattr_flags

HEADER = "#mtree v1.0"


def desync_name(raw: bytes) -> str:
    """desync ``mtreeFilename``: backslash, ``#``, space and bytes outside 33..126 as \\ooo."""
    return "".join(f"\\{c:03o}" if c in (0x5C, 0x23, 0x20) or c < 32 or c > 126 else chr(c)
                   for c in raw)


def _time(ns: int, zero_pad: bool) -> str:
    # Go's "%d.%09d" for files, "%d.%9d" (space-padded) for every other node
    sec, frac = divmod(ns, 10**9)
    return f"time={sec}.{frac:09d}" if zero_pad else f"time={sec}.{frac:>9d}"


def desync_line(name: bytes, kind: str, perm: int, uid: int, gid: int, mtime_ns: int, *,
                size: int = 0, digest: tuple[str, str] | None = None,
                target: bytes = b"") -> str | None:
    """One line as desync's MtreeFS writes it; None for node types it leaves out."""
    head = [desync_name(name)]
    ids = [f"uid={uid}", f"gid={gid}"]
    mode = f"mode={perm & 0o777:04o}"
    if kind == "dir":
        return " ".join([*head, "type=dir", mode, *ids, _time(mtime_ns, False)])
    if kind == "file":
        assert digest is not None
        return " ".join([*head, "type=file", mode, *ids, f"size={size}", _time(mtime_ns, True),
                         f"{digest[0]}={digest[1]}"])
    if kind == "link":
        return " ".join([*head, "type=link", mode, f"target={desync_name(target)}", *ids,
                         _time(mtime_ns, False)])
    if kind in ("char", "block"):
        return " ".join([*head, f"type={kind}", mode, *ids, _time(mtime_ns, False)])
    assert kind in ("fifo", "socket"), kind
    return None


# --- from casync's listing of an archive ----------------------------------------------------

def _unescape(text: str) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), text.encode())


def _time_ns(value: str) -> int:
    sec, _, frac = value.partition(".")
    return int(sec) * 10**9 + int(frac.ljust(9, "0"))


def expected_from_casync(casync: str, archive: Path, *options: str) -> list[str]:
    listing = subprocess.run([casync, "mtree", *options, str(archive)], check=True,
                             capture_output=True).stdout.decode()
    lines = [HEADER]
    for row in listing.splitlines():
        name, *pairs = row.split(" ")
        kv = dict(p.split("=", 1) for p in pairs)
        line = desync_line(
            _unescape(name), kv["type"], int(kv["mode"], 8), int(kv.get("uid", 0)),
            int(kv.get("gid", 0)), _time_ns(kv.get("time", "0")), size=int(kv.get("size", 0)),
            digest=("sha512256digest", kv["sha512256digest"]) if kv["type"] == "file" else None,
            target=_unescape(kv.get("link", "")))
        if line is not None:
            lines.append(line)
    return lines


def _ours(*args: str | Path) -> list[str]:
    out = run_cli(["mtree", *args]).stdout
    assert out.endswith(b"\n")
    return out.decode().splitlines()


PEER_ARCHIVES = ["testdata/complex.catar", "testdata/flat.catar", "testdata/nested.catar",
                 "testdata/flatdir.catar", "cmd/desync/testdata/tree.catar"]


@pytest.mark.parametrize("rel", PEER_ARCHIVES)
def test_mtree_peer_archives(casync: str, peer: Path, rel: str) -> None:
    want = expected_from_casync(casync, peer / rel)
    assert len(want) > 3
    assert _ours(peer / rel) == want


def test_mtree_peer_caidx(casync: str, peer: Path) -> None:
    d = peer / "cmd" / "desync" / "testdata"
    want = expected_from_casync(casync, d / "tree.caidx", f"--store={d / 'tree.store'}")
    assert _ours("-i", "-s", d / "tree.store", d / "tree.caidx") == want
    # the caidx holds the same tree as tree.catar
    assert want == expected_from_casync(casync, d / "tree.catar")


def test_mtree_complex_known_lines(peer: Path) -> None:
    """A few of desync's lines for complex.catar, written out by hand (the space-padded
    nanoseconds of a directory included)."""
    lines = _ours(peer / "testdata" / "complex.catar")
    assert lines[:2] == [HEADER, ". type=dir mode=0775 uid=1000 gid=1000 time=1564851970.494945701"]
    assert "subdir1/subdir12 type=dir mode=0775 uid=1000 gid=1000 time=1564850846. 71751951" in lines
    assert ("relative.symlink type=link mode=0777 target=test1.file uid=1000 gid=1000 "
            "time=1564851743.967297626") in lines


@pytest.mark.parametrize("tree", ["basic", "awkward"])
def test_mtree_catar_of_our_trees(casync: str, tmp_path: Path, tree: str) -> None:
    """casync's catar of a tree with every node type (devices and foreign owners as root)
    and awkward names: our mtree of it is desync's rendering of casync's listing."""
    src = build(tmp_path, tree)
    subprocess.run([casync, "make", str(tmp_path / "a.catar"), str(src)], check=True,
                   capture_output=True)
    assert _ours(tmp_path / "a.catar") == expected_from_casync(casync, tmp_path / "a.catar")


# --- from the file system itself ------------------------------------------------------------

KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link", stat.S_IFCHR: "char",
         stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


FS_NODUMP_FL = 0x40  # linux/fs.h


def expected_from_disk(root: Path, digest: str) -> list[str]:
    """desync's lines for a directory, from lstat and hashlib, depth first in byte order.

    One difference from desync, which never reads chattr flags: nodes with chattr ``+d``
    are left out, as desync-ref walks a directory for ``mtree`` as it does for ``tar``,
    with casync's default ``EXCLUDE_NODUMP`` (spec/catar.md § "Feature flags")."""
    algo, key = ("sha512_256", "sha512256digest") if digest == "sha512-256" else \
        ("sha256", "sha256digest")
    top = os.fsencode(root)
    lines = [HEADER]

    def visit(rel: bytes) -> None:
        path = top + b"/" + rel if rel else top
        st = os.lstat(path)
        kind = KINDS[stat.S_IFMT(st.st_mode)]
        if rel and kind in ("file", "dir") and (chattr_flags(path) or 0) & FS_NODUMP_FL:
            return
        sha = None
        if kind == "file":
            with open(path, "rb") as f:
                sha = (key, hashlib.new(algo, f.read()).hexdigest())
        line = desync_line(rel or b".", kind, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                           size=st.st_size, digest=sha,
                           target=os.readlink(path) if kind == "link" else b"")
        if line is not None:
            lines.append(line)
        if kind == "dir":
            for name in sorted(os.listdir(path)):
                visit(rel + b"/" + name if rel else name)

    visit(b"")
    return lines


@pytest.mark.parametrize("digest", ["sha512-256", "sha256"])
@pytest.mark.parametrize("tree", ["basic", "awkward", "deep"])
def test_mtree_directory(tmp_path: Path, tree: str, digest: str) -> None:
    src = build(tmp_path, tree)
    want = expected_from_disk(src, digest)
    assert len(want) > 3
    assert _ours("--digest", digest, src) == want
