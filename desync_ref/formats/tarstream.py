"""tar --input-format tar: a tar stream (GNU, PAX incl. ``SCHILY.xattr.*``, USTAR) to a catar.

Spec: ``spec/catar.md`` § "Tar streams". A tar stream may list a directory's entries in
any order and may omit directories, while a catar needs each directory's children in
strcmp order; so the metadata is kept in memory (a few hundred bytes per entry) and the
file contents are spooled to one temporary file, then the tree is encoded. Hard links
become separate files (the catar format has no hard links).
"""

from __future__ import annotations

import re
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from desync_ref.errors import InvalidFormat, UnsupportedEntry
from desync_ref.formats import constants as c
from desync_ref.formats.catar import (
    MAJOR_LIMIT,
    MINOR_LIMIT,
    CatarWriter,
    Entry,
    id_max,
    valid_name,
)
from desync_ref.formats.flag_rules import fixup_mode, fixup_mtime, type_allowed, xattr_name_stored

COPY_BLOCK = 1024 * 1024
_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG, tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK, tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO, tarfile.LNKTYPE: stat.S_IFREG,
}


@dataclass
class _Node:
    mode: int = stat.S_IFDIR | 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    uname: str = ""
    gname: str = ""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    spool: int = 0
    size: int = 0
    target: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    children: dict[bytes, _Node] = field(default_factory=dict)


def _components(name: str) -> list[bytes]:
    parts = [p for p in name.encode("utf-8", "surrogateescape").split(b"/") if p not in (b"", b".")]
    for p in parts:
        if not valid_name(p):
            raise InvalidFormat(f"tar entry {name!r} has an invalid path component {p!r}")
    return parts


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]*)?\Z")
_INT64 = range(-(1 << 63), 1 << 63)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's mtime in ns: a PAX ``mtime`` is a decimal number of seconds with an
    optional fraction (POSIX pax, "mtime"); anything else in it is refused, as GNU tar does."""
    text = member.pax_headers.get("mtime")
    if text is None:
        ns = int(member.mtime) * 10**9
    else:
        if not _DECIMAL.match(text):
            raise InvalidFormat(f"tar entry {member.name!r} has an invalid PAX mtime {text!r}")
        whole, _, frac = text.partition(".")
        sign = -1 if whole.startswith("-") else 1
        ns = sign * (abs(int(whole)) * 10**9 + int((frac + "000000000")[:9]))
    if ns not in _INT64:
        raise InvalidFormat(f"tar entry {member.name!r} has an mtime out of range ({ns} ns)")
    return ns


def _lookup(root: _Node, parts: list[bytes], create: bool) -> _Node:
    node = root
    for i, p in enumerate(parts):
        if not stat.S_ISDIR(node.mode):
            # A later member may replace a node, but nothing can be below a file or a
            # symlink: an entry "under" a symlink would otherwise vanish from the archive.
            raise InvalidFormat(f"tar entry {b'/'.join(parts)!r} is below "
                                f"{b'/'.join(parts[:i])!r}, which is not a directory")
        child = node.children.get(p)
        if child is None:
            if not create:
                raise InvalidFormat(f"tar hard link to missing entry {b'/'.join(parts)!r}")
            child = node.children[p] = _Node()
        node = child
    return node


def read_tar(stream: IO[bytes], spool: BinaryIO) -> _Node:
    root = _Node()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                _add(root, archive, member, spool)
    except tarfile.TarError as exc:
        raise InvalidFormat(f"bad tar stream: {exc}") from None
    return root


def _add(root: _Node, archive: tarfile.TarFile, m: tarfile.TarInfo, spool: BinaryIO) -> None:
    kind = _TYPES.get(m.type)
    if kind is None:
        return  # unknown entry types (e.g. GNU volume headers) are skipped
    parts = _components(m.name)
    node = _lookup(root, parts, create=True)
    if node.children and kind != stat.S_IFDIR:
        raise InvalidFormat(f"tar entry {m.name!r} replaces a directory that has entries")
    _check_ids(m)
    node.mode = kind | (m.mode & 0o7777)
    node.uid, node.gid, node.uname, node.gname = m.uid, m.gid, m.uname, m.gname
    node.mtime = _mtime_ns(m)
    node.xattrs = {k[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape"):
                   v.encode("utf-8", "surrogateescape")
                   for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    if m.type == tarfile.LNKTYPE:
        linked = _lookup(root, _components(m.linkname), create=False)
        if not stat.S_ISREG(linked.mode):
            raise InvalidFormat(f"tar hard link {m.name!r} to {m.linkname!r}, "
                                f"which is not a regular file")
        node.spool, node.size = linked.spool, linked.size
    elif kind == stat.S_IFREG:
        node.spool = spool.seek(0, 2)
        node.size = m.size
        data = archive.extractfile(m)
        assert data is not None
        while block := data.read(COPY_BLOCK):
            spool.write(block)
    elif kind == stat.S_IFLNK:
        node.target = m.linkname.encode("utf-8", "surrogateescape")
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        if not (0 <= m.devmajor < MAJOR_LIMIT and 0 <= m.devminor < MINOR_LIMIT):
            raise InvalidFormat(f"tar entry {m.name!r} has device number "
                                f"{m.devmajor}:{m.devminor}, out of Linux's range")
        node.rdev = (m.devmajor, m.devminor)


def _check_ids(m: tarfile.TarInfo) -> None:
    """Owners a catar can hold at all (32 bits; ``(uid_t) -1`` means "unchanged")."""
    for what, value in (("uid", m.uid), ("gid", m.gid)):
        if not 0 <= value <= id_max(c.CA_FORMAT_WITH_32BIT_UIDS):
            raise InvalidFormat(f"tar entry {m.name!r} has {what} {value}, out of range")


def _entry(node: _Node, flags: int, no_time: bool, path: bytes) -> Entry:
    e = Entry(flags, fixup_mode(flags, node.mode),
              mtime=0 if no_time else fixup_mtime(flags, node.mtime))
    if flags & c.CA_FORMAT_WITH_UIDS:
        if flags & c.CA_FORMAT_WITH_16BIT_UIDS and max(node.uid, node.gid) > 0xFFFF:
            raise UnsupportedEntry(f"tar entry {path.decode('utf-8', 'backslashreplace')}: "
                                   f"uid/gid does not fit 16 bits")
        e.uid, e.gid = node.uid, node.gid
    if flags & c.CA_FORMAT_WITH_USER_NAMES:
        e.user = node.uname.encode() if node.uid and node.uname else None
        e.group = node.gname.encode() if node.gid and node.gname else None
    regular_or_dir = stat.S_ISREG(node.mode) or stat.S_ISDIR(node.mode)
    for name, value in sorted(node.xattrs.items()) if regular_or_dir else ():
        if name == b"security.capability" and stat.S_ISREG(node.mode):
            if flags & c.CA_FORMAT_WITH_FCAPS:
                e.fcaps = value
        elif xattr_name_stored(name) and flags & c.CA_FORMAT_WITH_XATTRS:
            e.xattrs.append((name, value))
    e.size = node.size if stat.S_ISREG(node.mode) else 0
    e.target = node.target
    e.rdev = node.rdev
    return e


def _encode(w: CatarWriter, node: _Node, flags: int, spool: BinaryIO, no_time: bool,
            path: bytes = b".") -> None:
    w.entry(_entry(node, flags, no_time, path))
    if stat.S_ISREG(node.mode):
        spool.seek(node.spool)
        left = node.size
        while left:
            block = spool.read(min(COPY_BLOCK, left))
            w.payload(block)
            left -= len(block)
    elif stat.S_ISDIR(node.mode):
        for name in sorted(node.children):
            child = node.children[name]
            if not type_allowed(flags, child.mode):
                continue
            w.begin_child(name)
            _encode(w, child, flags, spool, no_time, name if path == b"." else path + b"/" + name)
            w.end_child()
        w.end_dir()


def write_catar_from_tar(source: str, write: Callable[[bytes], object], flags: int, *,
                         stream: IO[bytes] | None = None, no_time: bool = False,
                         add_root: bool = False) -> int:
    """Encode the tar stream (file ``source`` or ``stream``) as a catar, handing the bytes
    to ``write``.

    The root directory is the stream's ``.`` entry if it has one, else (and always with
    ``add_root``, as in desync) a directory 0755 owned by 0:0 with mtime 0."""
    writer = CatarWriter(write)
    with tempfile.TemporaryFile() as spool:
        if stream is None:
            with open(source, "rb") as f:
                root = read_tar(f, spool)
        else:
            root = read_tar(stream, spool)
        if add_root:
            root.mode, root.uid, root.gid, root.mtime, root.xattrs = stat.S_IFDIR | 0o755, 0, 0, 0, {}
        if not stat.S_ISDIR(root.mode):
            raise InvalidFormat("tar stream's root entry is not a directory")
        _encode(writer, root, flags, spool, no_time)
    return writer.offset
