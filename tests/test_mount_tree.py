"""mount-archive: a caidx or catar tree mounted for real over FUSE equals what untar writes
(spec/mount-tree.md)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_clean_failure, require_fuse, run_cli
from httputil import Upstream
from treesnap import assert_same_tree, chattr_flags

from desync_ref.formats import constants as c
from desync_ref.formats.catar import CatarWriter, Entry
from desync_ref.formats.index import parse_index
from desync_ref.mount.table import build_table

pytestmark = pytest.mark.compiled_pass_only

# Neither FUSE nor untar's ext4 output carries these the same way: chattr flags of the disk
# copy include the file system's own (extents), and FUSE has no project ids.
NOT_COMPARED = ("chattr", "projid")
SMALL = b"the one small file of the tree\n"




def _set_times(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _make_tree(top: Path) -> None:
    top.mkdir()
    (top / "empty").write_bytes(b"")
    os.chmod(top / "empty", 0o600)
    small = top / "small.txt"
    small.write_bytes(SMALL)
    os.chmod(small, 0o640)
    os.chown(small, 1001, 1002)
    os.setxattr(small, "user.comment", b"a note")
    os.setxattr(small, "user.empty", b"")
    os.link(small, top / "hard-link-to-small")  # catar keeps no hard links: a second file
    big = os.urandom(700 * 1024)  # several chunks at -m 16:64:256
    (top / "big.bin").write_bytes(big)
    with open(top / "sparse.img", "wb") as f:
        f.seek(300 * 1024)
        f.write(b"tail after a hole")
    (top / "setuid-tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(top / "setuid-tool", 0o4755)
    (top / "grüße.txt").write_bytes(b"non-ASCII name\n")
    many = top / "many"
    many.mkdir()
    for i in range(60):
        (many / f"f{i:03d}").write_bytes(os.urandom(1500))
    d = top / "dir" / "sub" / "deeper"
    d.mkdir(parents=True)
    (d / "leaf").write_bytes(b"leaf\n")
    os.symlink("../small.txt", top / "dir" / "link")
    os.symlink("nowhere/at/all", top / "dir" / "dangling")
    os.chown(top / "dir" / "dangling", 5, 6, follow_symlinks=False)
    os.setxattr(top / "dir", "trusted.origin", b"test")
    os.setxattr(top / "dir" / "link", "trusted.on-link", b"x", follow_symlinks=False)
    os.mkfifo(top / "fifo")
    os.mknod(top / "chardev", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(top / "blockdev", stat.S_IFBLK | 0o640, os.makedev(7, 200))
    os.chmod(top / "dir" / "sub", 0o1777)
    os.chmod(top / "dir", 0o750)
    os.chown(top / "dir", 33, 33)
    for n, p in enumerate(sorted(top.rglob("*"), reverse=True)):
        _set_times(p, 1_500_000_000_123_456_789 + n * 1_000_000_007)
    _set_times(top, 1_600_000_000_000_000_001)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_fuse()
    w = tmp_path_factory.mktemp("mount-tree")
    _make_tree(w / "src")
    run_cli(["tar", w / "tree.catar", w / "src"])
    run_cli(["tar", "-i", "-s", w / "store", "-m", "16:64:256", w / "tree.caidx", w / "src"])
    run_cli(["untar", "-i", "-s", w / "store", w / "tree.caidx", w / "untarred"])
    return w


@contextlib.contextmanager
def _mounted(args: list[str | os.PathLike[str]], mountpoint: Path,
             command: str = "mount-archive") -> Iterator[Path]:
    """``COMMAND ARGS MOUNTPOINT`` in the background until it is mounted; always
    unmounted (lazily, so a busy mount cannot keep it) and the process ended after."""
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", command,
                             *map(str, args), str(mountpoint)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                raise AssertionError(f"mount-archive exited ({proc.returncode}): "
                                     f"{proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise AssertionError("mount-archive did not mount in 30 s")
            time.sleep(0.05)
        yield mountpoint
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module", params=["caidx", "catar", "mount-index caidx"])
def mount(request: pytest.FixtureRequest, made: Path) -> Iterator[Path]:
    """The tree mounted by mount-archive (a caidx with its store, a catar), and by
    mount-index, which hands a caidx to the same tree mount."""
    args: list[str | os.PathLike[str]] = (
        [made / "tree.catar"] if request.param == "catar"
        else ["-s", made / "store", made / "tree.caidx"])
    command = "mount-index" if request.param.startswith("mount-index") else "mount-archive"
    with _mounted(args, made / f"mnt-{request.param.replace(' ', '-')}", command) as mountpoint:
        yield mountpoint


def test_mount_equals_untar_node_for_node(mount: Path, made: Path) -> None:
    snap = assert_same_tree(mount, made / "untarred", ignore=NOT_COMPARED)
    # The tree really has what the comparison is about.
    assert snap[b"dir/link"]["target"] == b"../small.txt"
    assert snap[b"chardev"]["rdev"] == (1, 3) and snap[b"blockdev"]["type"] == "b"
    assert snap[b"small.txt"]["xattrs"] == {"user.comment": b"a note", "user.empty": b""}
    assert snap[b"small.txt"]["uid"] == 1001 and snap[b"dir"]["mode"] == "0750"
    assert snap[b"big.bin"]["size"] == 700 * 1024
    assert snap[b"."]["mtime_ns"] == 1_600_000_000_000_000_001


def _listing(top: Path) -> list[str]:
    """``ls -lnR`` with what depends on the file system holding a directory (its size, link
    count and the ``total`` blocks lines) left out."""
    out = subprocess.run(["ls", "-lnR", "--time-style=full-iso", "."], cwd=top, check=True,
                         capture_output=True).stdout.decode("utf-8", "replace")
    lines = []
    for line in out.splitlines():
        if line.startswith("total "):
            continue
        fields = line.split()
        if line.startswith("d") and len(fields) > 5:
            fields[1] = fields[4] = "-"
        lines.append(" ".join(fields))
    return lines


def test_ls_cat_cp_and_tar_of_the_mount(mount: Path, made: Path, tmp_path: Path) -> None:
    out = made / "untarred"
    assert _listing(mount) == _listing(out)
    cat = subprocess.run(["cat", mount / "big.bin", mount / "small.txt", mount / "sparse.img"],
                         check=True, capture_output=True).stdout
    assert cat == (out / "big.bin").read_bytes() + SMALL + (out / "sparse.img").read_bytes()
    subprocess.run(["cp", "-a", mount, tmp_path / "copy"], check=True)
    assert_same_tree(tmp_path / "copy", out, ignore=NOT_COMPARED)
    # pax headers without the process id in their names and without atime/ctime, which
    # no archive carries.
    tar = ["tar", "--sort=name", "--numeric-owner", "--xattrs", "--xattrs-include=*",
           "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
           "-cf", "-", "."]
    ours = subprocess.run(tar, cwd=mount, check=True, capture_output=True).stdout
    theirs = subprocess.run(tar, cwd=out, check=True, capture_output=True).stdout
    assert ours == theirs


def test_mount_is_read_only(mount: Path) -> None:
    for attempt in (lambda: (mount / "new").write_bytes(b"x"),
                    lambda: os.close(os.open(mount / "small.txt", os.O_RDWR)),
                    lambda: os.mkdir(mount / "newdir"),
                    lambda: os.chmod(mount / "small.txt", 0o777)):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno in (errno.EROFS, errno.EACCES)
    assert (mount / "small.txt").read_bytes() == SMALL


def test_read_of_one_small_file_fetches_only_its_chunks(made: Path) -> None:
    stream = (made / "tree.catar").read_bytes()
    index = parse_index((made / "tree.caidx").read_bytes())
    assert index.length == len(stream)  # the same archive stream, made with the same flags
    # small.txt is the last copy: "hard-link-to-small" (a copy in a catar) sorts before it.
    start = stream.rfind(SMALL)
    assert stream.find(SMALL) < start
    holding = {f"/{ch.id.hex()[:4]}/{ch.id.hex()}.cacnk" for ch in index.chunks
               if ch.start < start + len(SMALL) and ch.end > start}
    assert 1 <= len(holding) < len(index.chunks) // 4
    with Upstream(made / "store") as upstream, \
            _mounted(["-s", upstream.url, made / "tree.caidx"], made / "mnt-http") as mnt:
        assert len(upstream.hits) == len(index.chunks)  # the one pass building the table
        upstream.hits.clear()
        os.stat(mnt / "small.txt")
        os.listdir(mnt / "many")
        assert upstream.hits == []  # metadata comes from the table
        assert (mnt / "small.txt").read_bytes() == SMALL
        assert set(upstream.hits) == holding


def test_chattr_flags_of_a_file_through_the_ioctl(made: Path, tmp_path: Path) -> None:
    """FS_IOC_GETFLAGS on a mounted file answers the archive's chattr flags, as casync's
    mount does (FS_NOATIME_FL, ``chattr +A``, is one ext4 takes from anyone as root)."""
    top = tmp_path / "src"
    top.mkdir()
    (top / "noatime").write_bytes(b"x")
    (top / "plain").write_bytes(b"y")
    if subprocess.run(["chattr", "+A", top / "noatime"], capture_output=True).returncode:
        pytest.skip("the temporary file system takes no chattr flags")
    run_cli(["tar", "--with", "chattr", "--with", "permissions", tmp_path / "a.catar", top])
    with _mounted([tmp_path / "a.catar"], tmp_path / "mnt") as mnt:
        assert chattr_flags(os.fsencode(mnt / "noatime")) == 0x80
        assert chattr_flags(os.fsencode(mnt / "plain")) == 0


def test_caidx_without_store_is_a_usage_error(made: Path) -> None:
    proc = run_cli(["mount-archive", made / "tree.caidx", made / "nowhere"], check=False)
    assert proc.returncode == 2
    assert "store" in assert_clean_failure(proc)


def test_entry_table_memory_per_entry() -> None:
    """The table stays small: under 100 bytes per entry beyond the names (60 in the
    arrays, plus their growth slack)."""
    flags = c.CA_FORMAT_DEFAULT
    parts: list[bytes] = []
    w = CatarWriter(parts.append)
    n = 10_000
    w.entry(Entry(flags, stat.S_IFDIR | 0o755))
    for i in range(n):
        w.begin_child(b"f%05d" % i)
        w.entry(Entry(flags, stat.S_IFREG | 0o644, mtime=i))
        w.end_child()
    w.end_dir()
    archive = b"".join(parts)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        table = build_table([archive])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    names = 6 * n
    assert len(table) == n + 1 and table.lookup(b"f04242") == 4243
    assert (held - names) / n < 100, f"{held / n:.1f} bytes per entry"
