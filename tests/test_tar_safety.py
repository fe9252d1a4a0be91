"""untar never writes outside TARGET; bad archives fail with one line (spec/catar.md § Safety).

The attacks follow desync's ``archive_escape_test.go`` and ``localfs_escape_test.go``.
"""

from __future__ import annotations

import io
import os
import random
import stat
import struct
from pathlib import Path

import pytest

from desync_ref.formats.catar import CatarWriter, Entry
from desync_ref.formats.constants import CA_FORMAT_FILENAME
from tests.conftest import assert_clean_failure, run_cli

FLAGS = 0xB000000010001F22


def archive(children: list[tuple[bytes, Entry, bytes]]) -> bytes:
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    for name, e, payload in children:
        w.begin_child(name)
        w.entry(e)
        if stat.S_ISDIR(e.mode):
            w.end_dir()
        elif payload:
            w.payload(payload)
        w.end_child()
    w.end_dir()
    return out.getvalue()


def file_entry(data: bytes) -> Entry:
    return Entry(FLAGS, stat.S_IFREG | 0o644, size=len(data))


def rename(data: bytes, old: bytes, new: bytes) -> bytes:
    """Swap a FILENAME for a same-length one the writer would refuse (GOODBYE hash stays)."""
    rec = struct.pack("<2Q", 16 + len(old) + 1, CA_FORMAT_FILENAME) + old + b"\0"
    return data.replace(rec, struct.pack("<2Q", 16 + len(new) + 1, CA_FORMAT_FILENAME) + new + b"\0")


@pytest.mark.parametrize("evil", [b"../x", b"..", b"/x", b"a/../../x", b"."])
def test_path_names_refused(tmp_path: Path, evil: bytes) -> None:
    filler = b"q" * len(evil)
    data = rename(archive([(filler, file_entry(b"pwned"), b"pwned")]), filler, evil)
    (tmp_path / "a.catar").write_bytes(data)
    err = assert_clean_failure(run_cli(["untar", tmp_path / "a.catar", tmp_path / "t" / "in"],
                                       check=False))
    assert f"invalid file name {evil!r}" in err
    # nothing extracted: no target (its missing parent may be left, empty), nothing beside it
    assert not (tmp_path / "t" / "in").exists() and not (tmp_path / "x").exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) in (
        ["a.catar"], ["a.catar", "t"])


def test_existing_symlink_in_target_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "d")
    # a directory "d" holding a file "f": the writer builds it properly
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    w.begin_child(b"d")
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    w.begin_child(b"f")
    w.entry(file_entry(b"pwned"))
    w.payload(b"pwned")
    w.end_child()
    w.end_dir()
    w.end_child()
    w.end_dir()
    data = out.getvalue()
    (tmp_path / "a.catar").write_bytes(data)
    run_cli(["untar", tmp_path / "a.catar", target])
    assert list(outside.iterdir()) == []
    # the link was replaced by the archive's directory, which holds the file
    assert not (target / "d").is_symlink() and (target / "d" / "f").read_bytes() == b"pwned"


def test_symlink_then_write_through_it(tmp_path: Path) -> None:
    """An archive symlink 'a' -> outside, then a file 'a' (duplicate names) is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive([(b"a", Entry(FLAGS, stat.S_IFLNK | 0o777, target=str(outside).encode()), b""),
                    (b"b", file_entry(b"pwned"), b"pwned")])
    data = rename(data, b"b", b"a")
    (tmp_path / "a.catar").write_bytes(data)
    err = assert_clean_failure(run_cli(["untar", tmp_path / "a.catar", tmp_path / "t"],
                                       check=False))
    assert "file names out of order: b'a', b'a'" in err
    assert list(outside.iterdir()) == [] and not (tmp_path / "t").exists()


def test_file_over_existing_symlink_replaces_link(tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    outside.write_bytes(b"keep")
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(outside, target / "f")
    (tmp_path / "a.catar").write_bytes(archive([(b"f", file_entry(b"new"), b"new")]))
    run_cli(["untar", tmp_path / "a.catar", target])
    assert outside.read_bytes() == b"keep"
    assert (target / "f").read_bytes() == b"new" and not (target / "f").is_symlink()


@pytest.mark.parametrize("mutate", ["truncate", "magic", "goodbye", "size", "empty", "garbage"])
def test_bad_archives_fail_cleanly(tmp_path: Path, mutate: str) -> None:
    data = bytearray(archive([(b"f", file_entry(b"data"), b"data")]))
    goodbye_at = len(data) - (16 + 24 * 2)  # the root's table: one item and the tail
    if mutate == "truncate":
        data = data[:-10]
        why = f"archive is truncated at offset {len(data)}"
    elif mutate == "magic":
        data[8] ^= 0xFF
        why = "expected an ENTRY record at offset 0, found 0x1396fabcea5bbbae"
    elif mutate == "goodbye":
        data[-40] ^= 0xFF
        why = f"GOODBYE record at offset {goodbye_at} does not match its directory"
    elif mutate == "size":
        data[64:72] = struct.pack("<Q", 1 << 60)
        why = f"record 0x{CA_FORMAT_FILENAME:016x} has an invalid size {1 << 60}"
    elif mutate == "empty":
        data = bytearray()
        why = "archive is empty"
    else:
        data = bytearray(random.Random(7).randbytes(4096))
        why = f"expected an ENTRY record at offset 0, found 0x{int.from_bytes(data[8:16], 'little'):016x}"
    (tmp_path / "a.catar").write_bytes(bytes(data))
    err = assert_clean_failure(run_cli(["untar", tmp_path / "a.catar", tmp_path / "t"], check=False))
    assert why in err
    assert not (tmp_path / "t").exists()
    err = assert_clean_failure(run_cli(["mtree", tmp_path / "a.catar"], check=False))
    assert why in err


def test_missing_and_corrupt_chunk(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(300_000))
    run_cli(["tar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx", src])
    chunks = sorted((tmp_path / "s").rglob("*.cacnk"))
    chunks[0].write_bytes(chunks[1].read_bytes())
    victim = chunks[0].name.removesuffix(".cacnk")
    err = assert_clean_failure(run_cli(["untar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx",
                                        tmp_path / "o"], check=False))
    assert f"chunk id {victim} does not match its hash" in err
    assert not (tmp_path / "o").exists()
    chunks[0].unlink()
    err = assert_clean_failure(run_cli(["untar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx",
                                        tmp_path / "o2"], check=False))
    assert f"chunk {victim} not found in {tmp_path / 's'}" in err
    assert not (tmp_path / "o2").exists()


def test_usage_errors(tmp_path: Path) -> None:
    proc = run_cli(["tar", "-i", tmp_path / "x.caidx", tmp_path], check=False)
    assert "-i requires a store (-s <location>)" in assert_clean_failure(proc)
    assert proc.returncode == 2
    proc = run_cli(["tar", "--with", "bogus", tmp_path / "x.catar", tmp_path], check=False)
    assert "unknown feature flag 'bogus'" in assert_clean_failure(proc)
    assert proc.returncode == 2
    proc = run_cli(["tar", tmp_path / "x.catar", tmp_path / "missing"], check=False)
    assert f"No such file or directory: {tmp_path / 'missing'}" in assert_clean_failure(proc)
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["disk", "gnu-tar"])
def test_refused_archive_leaves_no_target(tmp_path: Path, fmt: str) -> None:
    junk = tmp_path / "junk.catar"
    junk.write_bytes(b"not a catar at all, just junk bytes" * 3)
    target = tmp_path / "out"
    err = assert_clean_failure(run_cli(["untar", "--output-format", fmt, junk, target], check=False))
    assert "expected an ENTRY record at offset 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.catar"]


def test_refused_archive_keeps_existing_target(tmp_path: Path) -> None:
    junk = tmp_path / "junk.catar"
    junk.write_bytes(b"\0" * 100)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("mine")
    err = assert_clean_failure(run_cli(["untar", junk, target], check=False))
    assert "expected an ENTRY record at offset 0, found 0x0000000000000000" in err
    assert sorted(target.iterdir()) == [target / "keep"] and (target / "keep").read_text() == "mine"
