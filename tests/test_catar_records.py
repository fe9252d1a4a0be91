"""SELINUX and QUOTA_PROJID records, built by hand (spec/catar.md § "Records").

A tree made on this machine may not hold these (ext4 without the ``project`` feature has
no project ids; a kernel without SELinux may refuse labels), so the flag-set rows of
``test_tar_casync.py`` can compare archives that both lack them. Here the records are
written byte by byte from casync's layouts (``src/caformat.h``: ``CaFormatSELinux`` is a
header and a NUL-terminated label, ``CaFormatQuotaProjID`` a header and a uint64; they
follow the ACL records and FCAPS and come before PAYLOAD/SYMLINK, ``caencoder.c``
``ca_encoder_get_entry_data``; a project id only for directories and regular files), then:

* casync reads the hand-built archive (so the bytes are what casync means),
* desync-ref's reader decodes the labels and ids, ``mtree`` lists it, ``untar`` restores
  the labels,
* desync-ref's writer, given the same entries, writes the same bytes.

desync_ref's library is used directly only in the two helpers ``_decode`` and ``_encode``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from tests import catar_bytes as cb
from tests.conftest import assert_clean_failure, run_cli
from tests.treesnap import assert_same_tree

FLAGS = (0xB000000000000000  # EXCLUDE_NODUMP | SHA512_256 | EXCLUDE_FILE, as casync adds
         | cb.WITH_32BIT_UIDS | cb.WITH_NSEC_TIME | cb.WITH_PERMISSIONS | cb.WITH_SYMLINKS
         | cb.WITH_SELINUX | cb.WITH_QUOTA_PROJID)
CASYNC_WITH = ["32bit-uids", "nsec-time", "permissions", "symlinks", "selinux", "quota-projid"]
MTIME = 1_700_000_000_987_654_321
DATA = b"hello, records\n"

# (path, mode, selinux label, project id, payload or symlink target)
NODES_A: list[tuple[bytes, int, bytes, int, bytes]] = [
    (b".", stat.S_IFDIR | 0o755, b"system_u:object_r:root_t:s0", 5, b""),
    (b"d", stat.S_IFDIR | 0o750, b"system_u:object_r:var_t:s0", 6, b""),
    (b"d/f", stat.S_IFREG | 0o640, b"system_u:object_r:etc_t:s0", 7, DATA),
]
NODES_B: list[tuple[bytes, int, bytes, int, bytes]] = [
    (b".", stat.S_IFDIR | 0o755, b"system_u:object_r:root_t:s0", 0, b""),
    (b"l", stat.S_IFLNK | 0o777, b"system_u:object_r:etc_t:s0", 0, b"target"),
]


def _node_bytes(mode: int, label: bytes, projid: int, data: bytes) -> bytes:
    out = cb.entry(FLAGS, mode, mtime=MTIME) + cb.record(cb.SELINUX, label + b"\0")
    if projid:
        out += cb.record(cb.QUOTA_PROJID, struct.pack("<Q", projid))
    if stat.S_ISREG(mode):
        out += cb.record(cb.PAYLOAD, data)
    elif stat.S_ISLNK(mode):
        out += cb.record(cb.SYMLINK, data + b"\0")
    return out


def hand_built(nodes: list[tuple[bytes, int, bytes, int, bytes]]) -> bytes:
    """A chain: each directory holds the next node as its only child."""
    *dirs, leaf = nodes
    data = _node_bytes(*leaf[1:])
    for (_, mode, label, projid, _), (child_path, *_rest) in zip(
            reversed(dirs), reversed(nodes[1:]), strict=True):
        data = cb.directory(_node_bytes(mode, label, projid, b""), child_path.split(b"/")[-1], data)
    return data


ARCHIVES = {"dir-file": NODES_A, "symlink": NODES_B}


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, nodes in ARCHIVES.items():
        out[name] = tmp_path / f"{name}.catar"
        out[name].write_bytes(hand_built(nodes))
    return out


def test_feature_flags_are_casyncs(casync: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    subprocess.run([casync, "make", *[f"--with={f}" for f in CASYNC_WITH],
                    str(tmp_path / "e.catar"), str(tmp_path / "empty")], check=True,
                   capture_output=True)
    assert int.from_bytes((tmp_path / "e.catar").read_bytes()[16:24], "little") == FLAGS


def _casync_listing(casync: str, archive: Path) -> list[str]:
    out = subprocess.run([casync, "mtree", str(archive)], check=True, capture_output=True)
    return [line.split(" ", 1)[0] for line in out.stdout.decode().splitlines()]


def _labels(root: Path) -> dict[bytes, bytes]:
    got = {}
    for rel in [b".", *(p for p, *_ in NODES_A[1:]), *(p for p, *_ in NODES_B[1:])]:
        path = os.path.join(os.fsencode(root), rel)
        if os.path.lexists(path):
            got[rel] = os.getxattr(path, "security.selinux", follow_symlinks=False)
    return got


def _can_label(tmp_path: Path) -> bool:
    probe = tmp_path / "label-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "security.selinux", b"system_u:object_r:etc_t:s0\0")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def test_casync_reads_hand_built(casync: str, archives: dict[str, Path], tmp_path: Path) -> None:
    assert _casync_listing(casync, archives["dir-file"]) == [".", "d", "d/f"]
    assert _casync_listing(casync, archives["symlink"]) == [".", "l"]
    if not _can_label(tmp_path):
        pytest.skip("this file system takes no SELinux labels: casync cannot restore them")
    # casync restores the labels from the records (project ids left out: ext4 here may
    # have no project quota)
    for name, nodes in ARCHIVES.items():
        out = tmp_path / f"casync-{name}"
        subprocess.run([casync, "extract", "--without=quota-projid", str(archives[name]),
                        str(out)], check=True, capture_output=True)
        assert _labels(out) == {p: label + b"\0" for p, _, label, _, _ in nodes}


# --- desync_ref's library, in one place -------------------------------------------------------

def _decode(data: bytes) -> list[tuple[int, bytes | None, int, bytes | None, int]]:
    """(mode, selinux, quota_projid, symlink target, payload size) of every entry."""
    from desync_ref.formats.catar_decoder import EntryEvent, FileEndEvent, PayloadEvent, iter_events
    found = []
    payload: list[bytes] = []
    for event in iter_events(io.BytesIO(data).read):
        if isinstance(event, EntryEvent):
            e = event.entry
            found.append((e.mode, e.selinux, e.quota_projid, e.target, e.size))
        elif isinstance(event, PayloadEvent):
            payload.append(event.data)
        elif isinstance(event, FileEndEvent):
            assert b"".join(payload) == DATA
            payload.clear()
    return found


def _encode(nodes: list[tuple[bytes, int, bytes, int, bytes]]) -> bytes:
    from desync_ref.formats.catar import CatarWriter, Entry
    out = io.BytesIO()
    w = CatarWriter(out.write)

    def make(mode: int, label: bytes, projid: int, data: bytes) -> Entry:
        e = Entry(FLAGS, mode, mtime=MTIME, selinux=label, quota_projid=projid)
        if stat.S_ISREG(mode):
            e.size = len(data)
        elif stat.S_ISLNK(mode):
            e.target = data
        return e

    *dirs, leaf = nodes
    for path, mode, label, projid, data in dirs:
        if path != b".":
            w.begin_child(path.split(b"/")[-1])
        w.entry(make(mode, label, projid, data))
    w.begin_child(leaf[0].split(b"/")[-1])
    w.entry(make(*leaf[1:]))
    if stat.S_ISREG(leaf[1]):
        w.payload(leaf[4])
    w.end_child()
    for path, *_ in reversed(dirs):
        w.end_dir()
        if path != b".":
            w.end_child()
    return out.getvalue()


# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_reader_decodes_records(name: str) -> None:
    nodes = ARCHIVES[name]
    want = [(mode, label, projid, data if stat.S_ISLNK(mode) else None,
             len(data) if stat.S_ISREG(mode) else 0) for _, mode, label, projid, data in nodes]
    assert _decode(hand_built(nodes)) == want


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_writer_encodes_records(name: str) -> None:
    assert _encode(ARCHIVES[name]) == hand_built(ARCHIVES[name])


def test_mtree_lists_hand_built(archives: dict[str, Path]) -> None:
    lines = run_cli(["mtree", archives["dir-file"]]).stdout.decode().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["#mtree", ".", "d", "d/f"]
    assert lines[3].startswith("d/f type=file mode=0640 uid=0 gid=0 size=15 time=1700000000.987654321 ")


def test_untar_restores_labels(tmp_path: Path) -> None:
    """untar of a hand-built archive with labels (and no project ids) restores each
    SELinux label, as casync does."""
    if not _can_label(tmp_path):
        pytest.skip("this file system takes no SELinux labels")
    nodes = [(p, mode, label, 0, data) for p, mode, label, _, data in NODES_A]
    (tmp_path / "a.catar").write_bytes(hand_built(nodes))
    run_cli(["untar", tmp_path / "a.catar", tmp_path / "o"])
    assert _labels(tmp_path / "o") == {p: label + b"\0" for p, _, label, _, _ in nodes}
    assert (tmp_path / "o" / "d" / "f").read_bytes() == DATA


def test_untar_restores_symlink_label(archives: dict[str, Path], tmp_path: Path) -> None:
    if not _can_label(tmp_path):
        pytest.skip("this file system takes no SELinux labels")
    run_cli(["untar", archives["symlink"], tmp_path / "o"])
    assert _labels(tmp_path / "o") == {p: label + b"\0" for p, _, label, _, _ in NODES_B}


def test_untar_project_ids_like_casync(casync: str, archives: dict[str, Path],
                                       tmp_path: Path) -> None:
    """Project ids: where casync can restore them, untar restores the same tree; where the
    file system has no project quota, casync refuses the archive and so does untar."""
    theirs = subprocess.run([casync, "extract", str(archives["dir-file"]), str(tmp_path / "t")],
                            capture_output=True)
    proc = run_cli(["untar", archives["dir-file"], tmp_path / "o"], check=False)
    if theirs.returncode != 0:
        assert b"Operation not supported" in theirs.stderr
        err = assert_clean_failure(proc)
        assert "Operation not supported" in err
        assert not (tmp_path / "o").exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(tmp_path / "o", tmp_path / "t")
