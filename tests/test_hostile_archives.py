"""Archives built to escape TARGET: each is refused or neutralised, and nothing appears or
changes outside TARGET: a canary directory beside it is compared before and after
(spec/catar.md § "Safety"). catar, caidx and tar-stream input; ``untar`` to disk and
``untar --output-format gnu-tar``. Cases already in test_tar_safety.py (``..`` names on
disk, symlinks already in TARGET) are not repeated.

Hostile catars come from a record writer of this file's own (``tests/catar_bytes.py``'s
records), which writes whatever names, order and node types it is given; hostile tar
streams from Python's ``tarfile``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests import catar_bytes as cb
from tests.conftest import assert_clean_failure, run_cli
from tests.test_hardening_archive import as_nobody, open_tmp  # noqa: F401 (fixture)
from tests.treesnap import snapshot

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

FLAGS = 0xB000000010001F22  # 32-bit ids, ns times, permissions, symlinks, devices, ...
DIR, REG, LNK = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777

# A node: ("dir", [(name, node), ...]) | ("file", bytes) | ("link", target) | ("chr", (ma, mi))
Node = tuple[str, Any]


def encode(node: Node) -> bytes:
    """The node's records; a directory's children in the order given, its GOODBYE table
    listing them as they came (the decoder accepts any item order)."""
    kind, value = node
    if kind == "file":
        return cb.entry(FLAGS, REG) + cb.record(cb.PAYLOAD, value)
    if kind == "link":
        return cb.entry(FLAGS, LNK) + cb.record(cb.SYMLINK, value + b"\0")
    if kind == "chr":
        return cb.entry(FLAGS, stat.S_IFCHR | 0o600) + cb.record(0xAC3DACE369DFE643,
                                                                  struct.pack("<2Q", *value))
    out = bytearray(cb.entry(FLAGS, DIR))
    items = []
    for name, child in value:
        start = len(out)
        out += cb.record(cb.FILENAME, name + b"\0") + encode(child)
        items.append((start, len(out) - start, cb.siphash24(name)))
    here = len(out)
    table = b"".join(struct.pack("<3Q", here - at, size, h) for at, size, h in items)
    size = 16 + 24 * (len(items) + 1)
    return bytes(out + cb.record(cb.GOODBYE, table + struct.pack("<3Q", here, size,
                                                                 cb.GOODBYE_TAIL_MARKER)))


def canary(base: Path) -> Path:
    d = base / "canary"
    (d / "sub").mkdir(parents=True)
    (d / "victim").write_bytes(b"keep")
    os.symlink("victim", d / "link")
    return d


def beside(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


FILE = ("file", b"pwned")
CATAR_CASES: dict[str, tuple[Node, str]] = {
    "dotdot": (("dir", [(b"..", ("dir", [(b"canary", ("dir", [(b"x", FILE)]))]))]),
               "invalid file name b'..'"),
    "slash-into-canary": (("dir", [(b"../canary/x", FILE)]), "invalid file name b'../canary/x'"),
    "absolute-into-canary": (("dir", [(b"CANARY/x", FILE)]), "invalid file name b'/"),
    "nul": (("dir", [(b"a\0b", FILE)]), "FILENAME is not a NUL-terminated string"),
    "long-name": (("dir", [(b"n" * 256, FILE)]), "has an invalid size 273"),
    "empty-name": (("dir", [(b"", FILE)]), "FILENAME is not a NUL-terminated string"),
    "duplicate": (("dir", [(b"a", ("file", b"1")), (b"a", ("file", b"2"))]),
                  "file names out of order: b'a', b'a'"),
    "out-of-order": (("dir", [(b"b", FILE), (b"a", FILE)]), "file names out of order: b'b', b'a'"),
    # an absolute symlink, then entries "under" it: by a name with a slash, or as a
    # directory of the same name (a symlink replacing a directory mid-archive is the same)
    "under-symlink-by-name": (("dir", [(b"l", ("link", b"CANARY")), (b"l/x", FILE)]),
                              "invalid file name b'l/x'"),
    "symlink-then-dir": (("dir", [(b"l", ("link", b"CANARY")),
                                  (b"l", ("dir", [(b"x", FILE)]))]),
                         "file names out of order: b'l', b'l'"),
    "dir-then-symlink-then-dir": (("dir", [(b"d", ("dir", [(b"a", FILE)])),
                                           (b"d", ("link", b"CANARY")),
                                           (b"d", ("dir", [(b"b", FILE)]))]),
                                  "file names out of order: b'd', b'd'"),
    "root-is-a-symlink": (("link", b"CANARY"), "the archive's root is not a directory"),
}


def with_canary(node: Node, canary_dir: Path) -> Node:
    """The node with ``CANARY`` in names and symlink targets made the canary's absolute path."""
    kind, value = node
    path = os.fsencode(canary_dir)
    if kind == "link":
        return kind, value.replace(b"CANARY", path)
    if kind == "dir":
        return kind, [(name.replace(b"CANARY", path), with_canary(child, canary_dir))
                      for name, child in value]
    return node


def build(node: Node, canary_dir: Path) -> bytes:
    return encode(with_canary(node, canary_dir))


@pytest.mark.parametrize("how", ["disk", "gnu-tar", "caidx"])
@pytest.mark.parametrize("case", sorted(CATAR_CASES))
def test_hostile_catar_refused(tmp_path: Path, case: str, how: str) -> None:
    node, why = CATAR_CASES[case]
    bird = canary(tmp_path)
    before = snapshot(bird)
    (tmp_path / "a.catar").write_bytes(build(node, bird))
    made = ["a.catar", "canary"]
    if how == "caidx":
        # the same bytes chunked into a store, read back through untar -i
        run_cli(["make", "-s", tmp_path / "store", tmp_path / "a.caidx", tmp_path / "a.catar"])
        args = ["untar", "-i", "-s", tmp_path / "store", tmp_path / "a.caidx", tmp_path / "out"]
        made += ["a.caidx", "store"]
    elif how == "gnu-tar":
        args = ["untar", "--output-format", "gnu-tar", tmp_path / "a.catar", tmp_path / "out.tar"]
    else:
        args = ["untar", tmp_path / "a.catar", tmp_path / "out"]
    err = assert_clean_failure(run_cli(args, check=False))
    assert why in err
    assert snapshot(bird) == before
    assert beside(tmp_path) == sorted(made)


@pytest.mark.parametrize("how", ["disk", "gnu-tar"])
def test_absolute_symlink_is_only_a_symlink(tmp_path: Path, how: str) -> None:
    """A symlink to the canary is restored as a symlink; nothing is written through it."""
    bird = canary(tmp_path)
    before = snapshot(bird)
    (tmp_path / "a.catar").write_bytes(build(("dir", [(b"l", ("link", b"CANARY/victim")),
                                                      (b"m", FILE)]), bird))
    if how == "disk":
        run_cli(["untar", tmp_path / "a.catar", tmp_path / "out"])
        assert os.readlink(tmp_path / "out" / "l") == f"{bird}/victim"
        assert (tmp_path / "out" / "m").read_bytes() == b"pwned"
    else:
        tar = run_cli(["untar", "--output-format", "gnu-tar", tmp_path / "a.catar", "-"]).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            assert [(m.name, m.type, m.linkname) for m in t] == [
                (".", tarfile.DIRTYPE, ""), ("l", tarfile.SYMTYPE, f"{bird}/victim"),
                ("m", tarfile.REGTYPE, "")]
    assert snapshot(bird) == before


def test_device_node_as_non_root(open_tmp: Path) -> None:  # noqa: F811 (fixture)
    """A device when the user may not make one: a one-line error naming it, nothing left."""
    bird = canary(open_tmp)
    before = snapshot(bird)
    (open_tmp / "a.catar").write_bytes(build(("dir", [(b"a", FILE), (b"null", ("chr", (1, 3)))]),
                                             bird))
    env = {**os.environ, "HOME": str(open_tmp)}
    proc = subprocess.run([*as_nobody(open_tmp), sys.executable, "-m", "desync_ref", "untar",
                           open_tmp / "a.catar", open_tmp / "out"], capture_output=True, env=env,
                          timeout=300)
    err = assert_clean_failure(proc)
    assert "character device null: cannot create (device number 1:3): Operation not permitted" in err
    assert snapshot(bird) == before
    assert beside(open_tmp) == ["a.catar", "canary"]


# --- tar streams -----------------------------------------------------------------------------

def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_stream(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR_REFUSED: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes]], str]] = {
    "dotdot": ([member("../canary/x", data=b"pwned")],
               "tar entry '../canary/x' has an invalid path component b'..'"),
    "under-absolute-symlink": ([member("l", tarfile.SYMTYPE, linkname="CANARY"),
                                member("l/x", data=b"pwned")],
                               "tar entry b'l/x' is below b'l', which is not a directory"),
    "symlink-replaces-dir": ([member("d", tarfile.DIRTYPE), member("d/a", data=b"1"),
                              member("d", tarfile.SYMTYPE, linkname="CANARY"),
                              member("d/b", data=b"pwned")],
                             "tar entry 'd' replaces a directory that has entries"),
    "hardlink-to-etc-passwd": ([member("p", tarfile.LNKTYPE, linkname="/etc/passwd")],
                               "tar hard link to missing entry b'etc/passwd'"),
    "hardlink-outside": ([member("p", tarfile.LNKTYPE, linkname="../canary/victim")],
                         "tar entry '../canary/victim' has an invalid path component b'..'"),
    "hardlink-to-symlink": ([member("l", tarfile.SYMTYPE, linkname="CANARY/victim"),
                             member("p", tarfile.LNKTYPE, linkname="l")],
                            "tar hard link 'p' to 'l', which is not a regular file"),
    "hardlink-through-symlink": ([member("l", tarfile.SYMTYPE, linkname="CANARY"),
                                  member("p", tarfile.LNKTYPE, linkname="l/victim")],
                                 "tar entry b'l/victim' is below b'l', which is not a directory"),
    "long-name": ([member("n" * 256, data=b"x")], "has an invalid path component"),
    "pax-path-with-nul": ([member("x", data=b"x", pax_headers={"path": "a\0b"})],
                          "tar entry 'a\\x00b' has an invalid path component b'a\\x00b'"),
}


def _stream(members: list[tuple[tarfile.TarInfo, bytes]], bird: Path) -> bytes:
    for info, _ in members:
        info.linkname = info.linkname.replace("CANARY", str(bird))
    return tar_stream(members)


@pytest.mark.parametrize("case", sorted(TAR_REFUSED))
def test_hostile_tar_stream_refused(tmp_path: Path, case: str) -> None:
    members, why = TAR_REFUSED[case]
    bird = canary(tmp_path)
    before = snapshot(bird)
    err = assert_clean_failure(run_cli(["tar", "--input-format", "tar", tmp_path / "a.catar", "-"],
                                       input=_stream(members, bird), check=False))
    assert why in err
    assert snapshot(bird) == before
    assert beside(tmp_path) == ["canary"]


@pytest.mark.parametrize("how", ["disk", "gnu-tar"])
def test_hostile_tar_stream_neutralised(tmp_path: Path, how: str) -> None:
    """Absolute names land below the root, a later duplicate replaces the earlier one (as
    GNU tar does), a hard link to an entry inside is a copy, a NUL in a header name ends
    it: the catar holds only names inside, and untar writes only inside TARGET."""
    bird = canary(tmp_path)
    before = snapshot(bird)
    members = [member(f"{bird}/victim", data=b"pwned"), member("f", data=b"first"),
               member("f", data=b"second"), member("h", tarfile.LNKTYPE, linkname=f"{bird}/victim"),
               member("nul\0/../../x", data=b"cut")]
    run_cli(["tar", "--input-format", "tar", tmp_path / "a.catar", "-"],
            input=_stream(members, bird))
    inside = bird.relative_to("/")
    expected = {str(inside / "victim"): b"pwned", "f": b"second", "h": b"pwned", "nul": b"cut"}
    if how == "disk":
        run_cli(["untar", tmp_path / "a.catar", tmp_path / "out"])
        files = {str(p.relative_to(tmp_path / "out")): p.read_bytes()
                 for p in (tmp_path / "out").rglob("*") if p.is_file()}
    else:
        tar = run_cli(["untar", "--output-format", "gnu-tar", tmp_path / "a.catar", "-"]).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            files = {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]
    assert files == expected
    assert snapshot(bird) == before
    assert beside(tmp_path) == sorted(["a.catar", "canary", *(["out"] if how == "disk" else [])])


def test_device_from_tar_stream_as_non_root(open_tmp: Path) -> None:  # noqa: F811 (fixture)
    """A tar stream's device node reaches the catar; untar by a user who may not make it is
    a one-line error naming it, and the target it made is gone again."""
    bird = canary(open_tmp)
    before = snapshot(bird)
    run_cli(["tar", "--input-format", "tar", open_tmp / "a.catar", "-"],
            input=tar_stream([member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)]))
    env = {**os.environ, "HOME": str(open_tmp)}
    proc = subprocess.run([*as_nobody(open_tmp), sys.executable, "-m", "desync_ref", "untar",
                           open_tmp / "a.catar", open_tmp / "out"], capture_output=True, env=env,
                          timeout=300)
    err = assert_clean_failure(proc)
    assert "block device dev/sda: cannot create (device number 8:0): Operation not permitted" in err
    assert snapshot(bird) == before
    assert beside(open_tmp) == ["a.catar", "canary"]
