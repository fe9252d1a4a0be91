"""``diff`` of archives: catar files and caidx read through a store, field by field, with
casync/desync divergences named (spec/diff.md § "Archives", spec/deviations.md § catar)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from desync_ref.audit.deviations import DESYNC_TAR_FLAGS
from tests import catar_bytes as cb
from tests.conftest import assert_clean_failure, run_cli
from tests.test_diff_index import differences, known

pytestmark = pytest.mark.compiled_pass_only

MTIME = 1_700_000_000_123_456_789


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"hello\n")
    (root / "g").write_bytes(b"other\n")
    os.symlink("g", root / "link")
    for path in (root / "sub" / "f", root / "g", root / "sub", root):
        os.utime(path, ns=(MTIME, MTIME))
    return root


def tar(tree: Path, out: Path, *extra: str) -> Path:
    run_cli(["tar", *extra, out, tree])
    return out


def diff(*args: object, text: bool = False) -> tuple[int, list[str], dict[str, object]]:
    """Exit code, the text lines (with ``text``, else none), the JSON report."""
    data = run_cli(["diff", "-f", "json", *map(str, args)], check=False)
    assert data.returncode in (0, 1), data.stderr.decode()
    lines: list[str] = []
    if text:
        proc = run_cli(["diff", *map(str, args)], check=False)
        assert proc.returncode == data.returncode, proc.stderr.decode()
        lines = proc.stdout.decode().splitlines()
    return data.returncode, lines, json.loads(data.stdout)


def test_one_mtime_names_the_path_and_field(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = tar(tree, tmp_path / "a.catar")
    os.utime(tree / "sub" / "f", ns=(MTIME, MTIME - MTIME % 1000))  # parents keep theirs
    b = tar(tree, tmp_path / "b.catar")
    code, lines, report = diff(a, b, text=True)
    assert code == 1
    field = ("./sub/f: mtime differs: A 2023-11-14 22:13:20.123456789 UTC, "
             "B 2023-11-14 22:13:20.123456000 UTC (B truncated to microseconds)")
    assert differences(report) == [field]
    assert lines[0] == "first difference: " + field
    assert lines[-1].startswith("summary: 5 entries in A, 5 in B; 1 paths differ")


def test_same_archive_exits_0(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a, b = tar(tree, tmp_path / "a.catar"), tar(tree, tmp_path / "b.catar")
    code, _, report = diff(a, b)
    assert code == 0 and differences(report) == []


def test_device_against_file_lacks_the_device_record(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    try:
        os.mknod(tree / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    for path in (tree / "null", tree):
        os.utime(path, ns=(MTIME, MTIME))
    a = tar(tree, tmp_path / "a.catar")
    (tree / "null").unlink()
    (tree / "null").write_bytes(b"")
    os.chmod(tree / "null", 0o666)
    for path in (tree / "null", tree):
        os.utime(path, ns=(MTIME, MTIME))
    b = tar(tree, tmp_path / "b.catar")
    code, _, report = diff(a, b)
    assert code == 1
    assert differences(report) == ["./null: type differs: A character device, B regular file",
                                   "./null: B lacks the DEVICE record",
                                   "./null: A lacks the PAYLOAD record"]


def test_casync_archive_against_desync_flags_names_the_entry_flags(
        casync: str, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    os.chown(tree / "g", 65534, 65534, follow_symlinks=False) if os.geteuid() == 0 else None
    a = tmp_path / "casync.catar"
    subprocess.run([casync, "make", str(a), str(tree)], check=True, capture_output=True)
    b = tar(tree, tmp_path / "desync.catar")  # desync's TarFeatureFlags (our tar's default)
    code, lines, report = diff(a, b, text=True)
    assert code == 1
    assert ("entry-flags", "B") in known(report)
    assert "archive feature flags: A 0xb0000001ffeffe26, B 0xb000000010001f22" in lines
    assert "archive feature flags: B has WITH_PERMISSIONS, A lacks it" in lines
    if os.geteuid() == 0:  # casync names uid 65534 (USER record); desync's flags keep no names
        assert "./g: B lacks the USER record (B's feature flags lack WITH_USER_NAMES)" in lines


def _xattr_archive(value: bytes) -> bytes:
    flags = DESYNC_TAR_FLAGS
    child = (cb.entry(flags, stat.S_IFREG | 0o644, mtime=MTIME)
             + cb.record(cb.XATTR, b"user.k\0" + value) + cb.record(cb.PAYLOAD, b"x"))
    return cb.directory(cb.entry(flags, stat.S_IFDIR | 0o755, mtime=MTIME), b"f", child)


def test_desync_xattr_nul_is_named(tmp_path: Path) -> None:
    a, b = tmp_path / "casync.catar", tmp_path / "desync.catar"
    a.write_bytes(_xattr_archive(b"val"))
    b.write_bytes(_xattr_archive(b"val\0"))  # desync writes a NUL after the value
    code, lines, report = diff(a, b, text=True)
    assert code == 1
    assert differences(report) == ["./f: XATTR 'user.k' differs: A 'val', B 'val\\x00'"]
    assert known(report) == [("xattr-nul", "B")]
    assert any("desync writes a NUL after XATTR values" in line for line in lines)


def test_fifo_only_in_one_side_names_desync_skipping_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    b = tar(tree, tmp_path / "b.catar")
    os.mkfifo(tree / "pipe")
    os.utime(tree, ns=(MTIME, MTIME))
    a = tar(tree, tmp_path / "a.catar")
    code, _, report = diff(a, b)
    assert code == 1
    assert differences(report) == ["Only in A: ./pipe (FIFO)"]
    assert known(report) == [("fifos-sockets", "B")]


def test_directory_only_in_one_side_is_one_line(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = tar(tree, tmp_path / "a.catar")
    (tree / "sub" / "f").unlink()
    (tree / "sub").rmdir()
    os.utime(tree, ns=(MTIME, MTIME))
    b = tar(tree, tmp_path / "b.catar")
    code, _, report = diff(a, b)
    assert code == 1
    assert differences(report) == ["Only in A: ./sub (directory, 1 entries below)"]


def test_caidx_through_a_store(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    store = tmp_path / "store"
    a = tar(tree, tmp_path / "a.caidx", "-i", "-s", str(store))
    catar = tar(tree, tmp_path / "a.catar")
    (tree / "g").write_bytes(b"changed\n")
    os.utime(tree / "g", ns=(MTIME, MTIME))
    b = tar(tree, tmp_path / "b.caidx", "-i", "-s", str(store))
    code, _, report = diff("-s", store, a, b)
    assert code == 1
    assert differences(report) == ["./g: size differs: A 6, B 8"]
    code, _, report = diff("-s", store, catar, a)  # a catar and its caidx: the same archive
    assert code == 0
    # Without the store the indexes themselves are compared (and the store is suggested).
    code, lines, _ = diff(a, b, text=True)
    assert code == 1
    assert "note: both are archive indexes: -s STORE compares the archives instead" in lines
    # A catar against a caidx needs the store: trouble, exit 2.
    proc = run_cli(["diff", catar, a], check=False)
    assert proc.returncode == 2
    assert "needs its store" in assert_clean_failure(proc)


def test_truncated_archive_is_trouble(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = tar(tree, tmp_path / "a.catar")
    cut = tmp_path / "cut.catar"
    cut.write_bytes(a.read_bytes()[:-30])
    proc = run_cli(["diff", a, cut], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 2 and "truncated" in err and proc.stdout == b""


def test_path_a_caexclude_excludes_names_desync_ignoring_it(casync: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "secret").write_bytes(b"s\n")
    (tree / "d" / "keep").write_bytes(b"k\n")
    (tree / "d" / ".caexclude").write_bytes(b"secret\n")
    a = tmp_path / "casync.catar"
    subprocess.run([casync, "make", str(a), str(tree)], check=True, capture_output=True)
    # desync archives the excluded file: a tar stream of the whole tree stands in for it
    # (desync-ref's own tar refuses a tree holding .caexclude).
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as t:
        t.add(tree, arcname=".")
    b = tmp_path / "desync.catar"
    run_cli(["tar", "--input-format", "tar", b, "-"], input=stream.getvalue())
    code, _, report = diff(a, b)
    assert code == 1
    assert "Only in B: ./d/secret (regular file)" in differences(report)
    assert ("caexclude", "B") in known(report)
