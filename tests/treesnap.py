"""Snapshots of a restored tree, to compare what untar wrote with what casync extracts.

``snapshot(root)`` records, for every node below ``root`` (and ``root`` itself, as
``"."``): its type, permission bits, owner, mtime in ns, xattrs (ACLs, file capabilities
and SELinux labels are xattrs too), chattr flags and project ids of files and directories, a SHA-256 of a
regular file's contents, a symlink's target and a device's numbers. Access and change
times, inode numbers and link counts are left out: no archive carries them.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, _IOR('f', 1, long)
FS_IOC_FSGETXATTR = 0x801C581F  # linux/fs.h, _IOR('X', 31, struct fsxattr) (28 bytes)


def _ioctl(path: bytes, request: int, buf: array.array[int]) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, request, buf, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def chattr_flags(path: bytes) -> int | None:
    buf = array.array("l", [0])
    return buf[0] if _ioctl(path, FS_IOC_GETFLAGS, buf) else None


def project_id(path: bytes) -> int | None:
    """``fsx_projid``, the fourth u32 of struct fsxattr."""
    buf = array.array("I", [0] * 7)
    return buf[3] if _ioctl(path, FS_IOC_FSGETXATTR, buf) else None


def node(path: bytes) -> dict[str, Any]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    info: dict[str, Any] = {
        "type": stat.filemode(kind | 0)[0], "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
        "xattrs": {n: os.getxattr(path, n, follow_symlinks=False)
                   for n in sorted(os.listxattr(path, follow_symlinks=False))},
    }
    if kind == stat.S_IFREG:
        with open(path, "rb") as f:
            info["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
        info["size"] = st.st_size
    if kind in (stat.S_IFREG, stat.S_IFDIR):
        info["chattr"] = chattr_flags(path)
        info["projid"] = project_id(path)
    if kind == stat.S_IFLNK:
        info["target"] = os.readlink(path)
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return info


def snapshot(root: Path) -> dict[bytes, dict[str, Any]]:
    """Every node below ``root`` by its relative path (bytes, as names may not be UTF-8)."""
    top = os.fsencode(root)
    out: dict[bytes, dict[str, Any]] = {b".": node(top)}

    def walk(rel: bytes) -> None:
        here = top + b"/" + rel if rel else top
        for name in sorted(os.listdir(here)):
            sub = rel + b"/" + name if rel else name
            out[sub] = node(here + b"/" + name)
            if out[sub]["type"] == "d":
                walk(sub)

    walk(b"")
    return out


def differences(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]],
                ignore: tuple[str, ...] = ()) -> list[str]:
    """Readable list of what differs between two snapshots (empty when equal), leaving out
    the fields named in ``ignore``."""
    diffs = [f"only in first: {p!r}" for p in sorted(a.keys() - b.keys())]
    diffs += [f"only in second: {p!r}" for p in sorted(b.keys() - a.keys())]
    for p in sorted(a.keys() & b.keys()):
        for key in sorted((a[p].keys() | b[p].keys()) - set(ignore)):
            if a[p].get(key) != b[p].get(key):
                diffs.append(f"{p!r} {key}: {a[p].get(key)!r} != {b[p].get(key)!r}")
    return diffs


def assert_same_tree(ours: Path, theirs: Path,
                     ignore: tuple[str, ...] = ()) -> dict[bytes, dict[str, Any]]:
    """The two trees are the same node for node (but for the fields in ``ignore``);
    returns the snapshot of ``ours``."""
    a, b = snapshot(ours), snapshot(theirs)
    diffs = differences(a, b, ignore)
    assert not diffs, "\n".join(diffs[:40])
    return a
