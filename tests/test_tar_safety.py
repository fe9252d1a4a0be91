"""untar never writes outside TARGET; bad archives fail with one line (spec/catar.md § Safety).

The attacks follow desync's ``archive_escape_test.go`` and ``localfs_escape_test.go``.
"""

from __future__ import annotations

import io
import os
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
    assert "name" in err
    assert not (tmp_path / "t" / "x").exists() and not (tmp_path / "x").exists()


def test_existing_symlink_in_target_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "d")
    data = archive([(b"d", Entry(FLAGS, stat.S_IFDIR | 0o755), b"")])
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
    run_cli(["untar", tmp_path / "a.catar", target], check=False)
    assert not (outside / "f").exists()


def test_symlink_then_write_through_it(tmp_path: Path) -> None:
    """An archive symlink 'a' -> outside, then a file 'a' (duplicate names) is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive([(b"a", Entry(FLAGS, stat.S_IFLNK | 0o777, target=str(outside).encode()), b""),
                    (b"b", file_entry(b"pwned"), b"pwned")])
    data = rename(data, b"b", b"a")
    (tmp_path / "a.catar").write_bytes(data)
    assert_clean_failure(run_cli(["untar", tmp_path / "a.catar", tmp_path / "t"], check=False))
    assert list(outside.iterdir()) == []


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
    if mutate == "truncate":
        data = data[:-10]
    elif mutate == "magic":
        data[8] ^= 0xFF
    elif mutate == "goodbye":
        data[-40] ^= 0xFF
    elif mutate == "size":
        data[64:72] = struct.pack("<Q", 1 << 60)
    elif mutate == "empty":
        data = bytearray()
    else:
        data = bytearray(os.urandom(4096))
    (tmp_path / "a.catar").write_bytes(bytes(data))
    assert_clean_failure(run_cli(["untar", tmp_path / "a.catar", tmp_path / "t"], check=False))
    assert_clean_failure(run_cli(["mtree", tmp_path / "a.catar"], check=False))


def test_missing_and_corrupt_chunk(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(300_000))
    run_cli(["tar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx", src])
    chunks = sorted((tmp_path / "s").rglob("*.cacnk"))
    chunks[0].write_bytes(chunks[1].read_bytes())
    err = assert_clean_failure(run_cli(["untar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx",
                                        tmp_path / "o"], check=False))
    assert "chunk" in err
    chunks[0].unlink()
    assert_clean_failure(run_cli(["untar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx",
                                  tmp_path / "o2"], check=False))


def test_usage_errors(tmp_path: Path) -> None:
    assert_clean_failure(run_cli(["tar", "-i", tmp_path / "x.caidx", tmp_path], check=False))
    assert_clean_failure(run_cli(["tar", "--with", "bogus", tmp_path / "x.catar", tmp_path],
                                 check=False))
    assert_clean_failure(run_cli(["tar", tmp_path / "x.catar", tmp_path / "missing"], check=False))
    assert not (tmp_path / "x.catar").exists()


@pytest.mark.parametrize("fmt", ["disk", "gnu-tar"])
def test_refused_archive_leaves_no_target(tmp_path: Path, fmt: str) -> None:
    junk = tmp_path / "junk.catar"
    junk.write_bytes(b"not a catar at all, just junk bytes" * 3)
    target = tmp_path / "out"
    assert_clean_failure(run_cli(["untar", "--output-format", fmt, junk, target], check=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.catar"]


def test_refused_archive_keeps_existing_target(tmp_path: Path) -> None:
    junk = tmp_path / "junk.catar"
    junk.write_bytes(b"\0" * 100)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("mine")
    assert_clean_failure(run_cli(["untar", junk, target], check=False))
    assert (target / "keep").read_text() == "mine"
