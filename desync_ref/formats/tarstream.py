"""tar --input-format tar: a tar stream (GNU, PAX incl. ``SCHILY.xattr.*``, USTAR) to a catar.

Spec: ``spec/catar.md`` § "Tar streams". A tar stream may list a directory's entries in
any order and may omit directories, while a catar needs each directory's children in
strcmp order; so the metadata is kept in memory (a few hundred bytes per entry) and the
file contents are spooled to one temporary file, then the tree is encoded. Hard links
become separate files (the catar format has no hard links).
"""

from __future__ import annotations

import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from desync_ref.errors import InvalidFormat
from desync_ref.formats import constants as c
from desync_ref.formats.catar import CatarWriter, Entry, valid_name
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


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text is None:
        return int(member.mtime) * 10**9
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    ns = abs(int(whole or "0")) * 10**9 + int((frac + "000000000")[:9] or "0")
    return sign * ns


def _lookup(root: _Node, parts: list[bytes], create: bool) -> _Node:
    node = root
    for p in parts:
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
    node.mode = kind | (m.mode & 0o7777)
    node.uid, node.gid, node.uname, node.gname = m.uid, m.gid, m.uname, m.gname
    node.mtime = _mtime_ns(m)
    node.xattrs = {k[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape"):
                   v.encode("utf-8", "surrogateescape")
                   for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    if m.type == tarfile.LNKTYPE:
        linked = _lookup(root, _components(m.linkname), create=False)
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
        node.rdev = (m.devmajor, m.devminor)


def _entry(node: _Node, flags: int, no_time: bool) -> Entry:
    e = Entry(flags, fixup_mode(flags, node.mode),
              mtime=0 if no_time else fixup_mtime(flags, node.mtime))
    if flags & c.CA_FORMAT_WITH_UIDS:
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


def _encode(w: CatarWriter, node: _Node, flags: int, spool: BinaryIO, no_time: bool) -> None:
    w.entry(_entry(node, flags, no_time))
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
            _encode(w, child, flags, spool, no_time)
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
