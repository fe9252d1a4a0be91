"""Archive-controlled values the OS or the format cannot take end in one line naming the
entry, never a traceback; untar's writes and cleanup hold under limits
(spec/catar.md § "Safety", § "Restoring a tree")."""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from desync_ref.formats import constants as c
from desync_ref.formats.catar import AclEntry, CatarWriter, Entry
from tests.conftest import assert_clean_failure, run_cli, skip_not_component

FLAGS = 0xB000000010001F22  # desync's default: 32-bit ids, ns times, permissions, ...
FLAGS_ACL = c.feature_flags_normalize(FLAGS | c.CA_FORMAT_WITH_ACL | c.CA_FORMAT_WITH_QUOTA_PROJID)
NOBODY = 65534


def one_child(child: Entry, payload: bytes = b"", name: bytes = b"x",
              before: tuple[tuple[bytes, Entry, bytes], ...] = ()) -> bytes:
    """A root directory holding ``before`` and then ``name``."""
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(child.feature_flags, stat.S_IFDIR | 0o755))
    for n, e, data in [*before, (name, child, payload)]:
        w.begin_child(n)
        w.entry(e)
        if stat.S_ISDIR(e.mode):
            w.end_dir()
        elif data:
            w.payload(data)
        w.end_child()
    w.end_dir()
    return out.getvalue()


REG = stat.S_IFREG | 0o644
HOSTILE_VALUES = {
    "device-major": (Entry(FLAGS, stat.S_IFCHR | 0o600, rdev=(1 << 40, 0)),
                     "has device number 1099511627776:0, out of Linux's range"),
    "device-minor": (Entry(FLAGS, stat.S_IFBLK | 0o600, rdev=(8, 1 << 20)),
                     "has device number 8:1048576, out of Linux's range"),
    "acl-permissions": (Entry(FLAGS_ACL, REG, acl_user=[AclEntry(5, 70000)]),
                        "has ACL permissions 70000"),
    "acl-default": (Entry(FLAGS_ACL, stat.S_IFDIR | 0o755, acl_default=(7, 8, 5, c.UINT64_MAX)),
                    "has ACL permissions 8"),
    "acl-id": (Entry(FLAGS_ACL, REG, acl_group=[AclEntry(1 << 32, 4)]),
               "has an ACL entry for id 4294967296"),
    "projid": (Entry(FLAGS_ACL, REG, quota_projid=1 << 33),
               "has project id 8589934592, more than 32 bits"),
    "uid-2^40": (Entry(FLAGS, REG, uid=1 << 40), "has uid 1099511627776"),
    "uid-2^64-1": (Entry(FLAGS, REG, uid=(1 << 64) - 1), "has uid 18446744073709551615"),
    "gid-2^63": (Entry(FLAGS, REG, gid=1 << 63), "has gid 9223372036854775808"),
    "uid-(uid_t)-1": (Entry(FLAGS, REG, uid=0xFFFFFFFF), "has uid 4294967295"),
}


@pytest.mark.parametrize("fmt", ["disk", "gnu-tar"])
@pytest.mark.parametrize("case", sorted(HOSTILE_VALUES))
def test_values_out_of_range_are_refused_naming_the_entry(tmp_path: Path, case: str, fmt: str) -> None:
    entry, why = HOSTILE_VALUES[case]
    (tmp_path / "a.catar").write_bytes(one_child(entry))
    out = tmp_path / ("out" if fmt == "disk" else "out.tar")
    err = assert_clean_failure(run_cli(["untar", "--output-format", fmt, tmp_path / "a.catar", out],
                                       check=False))
    assert f"entry 'x' at offset 82 {why}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.catar"]


def test_values_at_the_limits_are_restored(tmp_path: Path) -> None:
    """The largest values the checks let through still reach the disk."""
    if os.geteuid() != 0:
        skip_not_component("owners and devices need root")
    data = one_child(Entry(FLAGS, REG, uid=0xFFFFFFFE, gid=0xFFFFFFFE),
                     before=((b"d", Entry(FLAGS, stat.S_IFCHR | 0o600, rdev=(4095, (1 << 20) - 1)), b""),))
    (tmp_path / "a.catar").write_bytes(data)
    run_cli(["untar", tmp_path / "a.catar", tmp_path / "out"])
    st = os.lstat(tmp_path / "out" / "x")
    assert (st.st_uid, st.st_gid) == (0xFFFFFFFE, 0xFFFFFFFE)
    rdev = os.lstat(tmp_path / "out" / "d").st_rdev
    assert (os.major(rdev), os.minor(rdev)) == (4095, (1 << 20) - 1)


# --- times before 1970 -----------------------------------------------------------------------

def _old_tree(root: Path) -> None:
    root.mkdir()
    (root / "f").write_bytes(b"old\n")
    (root / "g").write_bytes(b"epoch\n")
    os.utime(root / "f", ns=(0, -315619199_500000000))  # 1960-01-01 00:00:00.5
    os.utime(root / "g", ns=(0, -1))
    os.utime(root, ns=(0, -700_000_001))


@pytest.mark.parametrize("time_flag", ["nsec-time", "sec-time", "2sec-time"])
def test_tar_of_times_before_1970_matches_casync(tmp_path: Path, casync: str, time_flag: str) -> None:
    """casync writes such a time as its two's complement (rounded as the unsigned value)."""
    _old_tree(tmp_path / "tree")
    subprocess.run([casync, "make", f"--with={time_flag}", "--with=permissions",
                    tmp_path / "c.catar", tmp_path / "tree"], check=True, capture_output=True)
    run_cli(["tar", "--with", time_flag, "--with", "permissions", tmp_path / "o.catar", tmp_path / "tree"])
    assert (tmp_path / "o.catar").read_bytes() == (tmp_path / "c.catar").read_bytes()


def test_times_before_1970_restored(tmp_path: Path) -> None:
    """... and are read back as the signed time, as desync does: untar, mtree, gnu-tar."""
    _old_tree(tmp_path / "tree")
    run_cli(["tar", tmp_path / "o.catar", tmp_path / "tree"])
    run_cli(["untar", tmp_path / "o.catar", tmp_path / "out"])
    assert os.lstat(tmp_path / "out" / "f").st_mtime_ns == -315619199_500000000
    assert os.lstat(tmp_path / "out" / "g").st_mtime_ns == -1
    assert os.lstat(tmp_path / "out").st_mtime_ns == -700_000_001
    mtree = run_cli(["mtree", tmp_path / "o.catar"]).stdout.decode()
    assert "f type=file mode=0644 uid=0 gid=0 size=4 time=-315619200.500000000 " in mtree
    tar = run_cli(["untar", "--output-format", "gnu-tar", tmp_path / "o.catar", "-"]).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert {m.name: m.mtime for m in t} == {".": -1, "f": -315619200, "g": -1}


# --- tar streams -----------------------------------------------------------------------------

def _tar(member: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(member, io.BytesIO(b""))
    return buf.getvalue()


@pytest.mark.parametrize("mtime, why", [
    ("1e5", "has an invalid PAX mtime '1e5'"),
    ("nan", "has an invalid PAX mtime 'nan'"),
    ("99999999999999999999", "has an mtime out of range (99999999999999999999000000000 ns)"),
])
def test_tar_stream_bad_pax_mtime(tmp_path: Path, mtime: str, why: str) -> None:
    member = tarfile.TarInfo("f")
    member.pax_headers = {"mtime": mtime}
    err = assert_clean_failure(run_cli(["tar", "--input-format", "tar", tmp_path / "o.catar", "-"],
                                       input=_tar(member), check=False))
    assert f"tar entry 'f' {why}" in err
    assert list(tmp_path.iterdir()) == []


def test_tar_stream_pax_mtime_before_1970(tmp_path: Path) -> None:
    member = tarfile.TarInfo("f")
    member.pax_headers = {"mtime": "-1.25"}
    run_cli(["tar", "--input-format", "tar", tmp_path / "o.catar", "-"], input=_tar(member))
    run_cli(["untar", tmp_path / "o.catar", tmp_path / "out"])
    assert os.lstat(tmp_path / "out" / "f").st_mtime_ns == -1_250_000_000


@pytest.mark.parametrize("field, value", [("uid", 1 << 40), ("uid", (1 << 64) - 1), ("gid", 1 << 32)])
def test_tar_stream_ids_out_of_range(tmp_path: Path, field: str, value: int) -> None:
    member = tarfile.TarInfo("f")
    member.pax_headers = {field: str(value)}
    err = assert_clean_failure(run_cli(["tar", "--input-format", "tar", tmp_path / "o.catar", "-"],
                                       input=_tar(member), check=False))
    assert f"tar entry 'f' has {field} {value}, out of range" in err


# --- writes that the file system cuts short --------------------------------------------------

def _file_size_limit(limit: int) -> Callable[[], None]:
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


@pytest.mark.parametrize("existing", [False, True])
def test_short_write_is_an_error_naming_the_file(tmp_path: Path, existing: bool) -> None:
    """Under a 1 KiB file size limit a 3,000-byte file is a clear error, never a silently
    cut file; a target the run created is removed again."""
    (tmp_path / "a.catar").write_bytes(one_child(Entry(FLAGS, REG, size=3000), b"z" * 3000,
                                                  name=b"big"))
    target = tmp_path / "out"
    if existing:
        target.mkdir()
    proc = subprocess.run([sys.executable, "-m", "desync_ref", "untar", tmp_path / "a.catar", target],
                          capture_output=True, preexec_fn=_file_size_limit(1024), timeout=300)
    err = assert_clean_failure(proc)
    assert "regular file big: cannot write: File too large" in err
    if existing:
        assert (target / "big").stat().st_size == 1024  # what the limit let through
    else:
        assert not target.exists()


# --- cleanup after a refused archive; EPERM of mknod -----------------------------------------

def as_nobody(tmp: Path) -> list[str]:
    """Command prefix that runs the child as nobody when we are root (devices then need a
    capability it lacks); empty when we are not root anyway."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        skip_not_component("setpriv (util-linux) is needed to drop root")
    os.chmod(tmp, 0o777)
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory that nobody may enter (under /tmp: pytest's base is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="desync-ref-nobody-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path)


def test_refused_archive_after_read_only_directory_leaves_nothing(open_tmp: Path) -> None:
    """A 0555 directory holding a 0444 file, then a device this user may not make: the
    error names the device, and the target the run created is removed entirely (the
    directory modes are applied only once the whole archive is in)."""
    ro = Entry(FLAGS, stat.S_IFDIR | 0o555)
    out = io.BytesIO()
    w = CatarWriter(out.write)
    w.entry(Entry(FLAGS, stat.S_IFDIR | 0o755))
    w.begin_child(b"a")
    w.entry(ro)
    w.begin_child(b"f")
    w.entry(Entry(FLAGS, stat.S_IFREG | 0o444, size=2))
    w.payload(b"hi")
    w.end_child()
    w.end_dir()
    w.end_child()
    w.begin_child(b"z")
    w.entry(Entry(FLAGS, stat.S_IFCHR | 0o600, rdev=(1, 3)))
    w.end_child()
    w.end_dir()
    (open_tmp / "a.catar").write_bytes(out.getvalue())
    env = {**os.environ, "HOME": str(open_tmp)}  # nobody may not read root's config file
    proc = subprocess.run([*as_nobody(open_tmp), sys.executable, "-m", "desync_ref", "untar",
                           open_tmp / "a.catar", open_tmp / "out"], capture_output=True, env=env,
                          timeout=300)
    if proc.returncode == 0:
        skip_not_component("this user may create devices")
    err = assert_clean_failure(proc)
    assert "character device z: cannot create (device number 1:3): Operation not permitted" in err
    assert sorted(p.name for p in open_tmp.iterdir()) == ["a.catar"]


def test_archive_root_metadata_applies_to_an_existing_target(tmp_path: Path, casync: str) -> None:
    """As casync extract does: the root entry's mode and mtime go to TARGET itself."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    os.chmod(src, 0o751)
    os.utime(src, ns=(0, 1_000_000_007))
    run_cli(["tar", tmp_path / "a.catar", src])
    for name, cmd in (("ours", None), ("casync", casync)):
        target = tmp_path / name
        target.mkdir(mode=0o700)
        if cmd is None:
            run_cli(["untar", tmp_path / "a.catar", target])
        else:
            subprocess.run([cmd, "extract", tmp_path / "a.catar", target], check=True, capture_output=True)
        st = target.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o751, 1_000_000_007), name
