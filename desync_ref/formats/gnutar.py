"""untar --output-format gnu-tar: desync's GNU tar writer (``tarfs.go``, Go ``archive/tar``).

Spec: ``spec/catar.md`` § "GNU tar output". Headers are laid out as Go's
``archive/tar`` writes them in GNU format: the mode field holds Go's ``os.FileMode`` (type
bits above the permission bits, so directories and links need base-256 numbers), magic
``"ustar  \\0"``, empty user and group names, device numbers zero unless a device.
Extended attributes (which desync's writer cannot encode in GNU format) are written as a
PAX header with ``SCHILY.xattr.*`` records; fifos and sockets are skipped, as desync does.
"""

from __future__ import annotations

import stat
from typing import BinaryIO, Final

from desync_ref.formats.catar import Entry

BLOCK: Final = 512
MODE_DIR, MODE_SYMLINK, MODE_DEVICE, MODE_CHAR = 1 << 31, 1 << 27, 1 << 26, 1 << 21
MODE_SETUID, MODE_SETGID, MODE_STICKY = 1 << 23, 1 << 22, 1 << 20


def go_file_mode(mode: int) -> int:
    """desync's ``StatModeToFilemode``: a stat mode as Go's ``os.FileMode``."""
    m = mode & 0o777
    kind = stat.S_IFMT(mode)
    m |= {stat.S_IFDIR: MODE_DIR, stat.S_IFLNK: MODE_SYMLINK, stat.S_IFBLK: MODE_DEVICE,
          stat.S_IFCHR: MODE_DEVICE | MODE_CHAR, stat.S_IFIFO: 1 << 25,
          stat.S_IFSOCK: 1 << 24}.get(kind, 0)
    if mode & stat.S_ISUID:
        m |= MODE_SETUID
    if mode & stat.S_ISGID:
        m |= MODE_SETGID
    if mode & stat.S_ISVTX:
        m |= MODE_STICKY
    return m


def _numeric(value: int, width: int) -> bytes:
    """Go's formatNumeric: octal if it fits in width-1 digits, else GNU base-256."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    out = bytearray(value.to_bytes(width, "big", signed=True))
    out[0] |= 0x80
    return bytes(out)


def _header(name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
            linkname: bytes = b"", major: int = 0, minor: int = 0) -> bytes:
    h = bytearray(BLOCK)
    h[0:len(name[:100])] = name[:100]
    h[100:108] = _numeric(mode, 8)
    h[108:116] = _numeric(uid, 8)
    h[116:124] = _numeric(gid, 8)
    h[124:136] = _numeric(size, 12)
    h[136:148] = _numeric(mtime, 12)
    h[156:157] = typeflag
    h[157:157 + len(linkname[:100])] = linkname[:100]
    h[257:265] = b"ustar  \0"
    h[329:337] = _numeric(major, 8)
    h[337:345] = _numeric(minor, 8)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


class GnuTarSink:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._size = 0  # of the regular file being written

    def _long(self, kind: bytes, value: bytes) -> None:
        data = value + b"\0"
        self.out.write(_header(b"././@LongLink", kind, 0, 0, 0, len(data), 0))
        self._data(data)

    def _data(self, data: bytes) -> None:
        self.out.write(data)
        if len(data) % BLOCK:
            self.out.write(bytes(BLOCK - len(data) % BLOCK))

    def _pax(self, name: bytes, e: Entry) -> None:
        records = b""
        for key, value in e.xattrs:
            body = b" SCHILY.xattr." + key + b"=" + value + b"\n"
            n = len(body)
            while len(str(n).encode()) + len(body) != n:
                n = len(str(n).encode()) + len(body)
            records += str(n).encode() + body
        self.out.write(_header(b"PaxHeaders.0/" + name.rsplit(b"/", 1)[-1], b"x", 0, 0, 0,
                               len(records), e.mtime // 10**9))
        self._data(records)

    def _entry(self, path: list[bytes], e: Entry, typeflag: bytes, size: int = 0) -> None:
        name = b"/".join(path) if path else b"."
        link = e.target or b""
        if e.xattrs:
            self._pax(name, e)
        if len(link) > 100:
            self._long(b"K", link)
        if len(name) > 100:
            self._long(b"L", name)
        major, minor = e.rdev or (0, 0)
        self.out.write(_header(name, typeflag, go_file_mode(e.mode), e.uid, e.gid, size,
                               e.mtime // 10**9, link, major, minor))

    def directory(self, path: list[bytes], e: Entry) -> None:
        self._entry(path, e, b"5")

    def end_directory(self, path: list[bytes], e: Entry) -> None:
        pass

    def begin_file(self, path: list[bytes], e: Entry) -> None:
        self._entry(path, e, b"0", e.size)
        self._size = e.size

    def file_data(self, data: bytes) -> None:
        self.out.write(data)

    def end_file(self) -> None:
        if self._size % BLOCK:
            self.out.write(bytes(BLOCK - self._size % BLOCK))

    def other(self, path: list[bytes], e: Entry) -> None:
        kind = stat.S_IFMT(e.mode)
        flag = {stat.S_IFLNK: b"2", stat.S_IFCHR: b"3", stat.S_IFBLK: b"4"}.get(kind)
        if flag is not None:
            self._entry(path, e, flag)

    def close(self) -> None:
        self.out.write(bytes(2 * BLOCK))
        self.out.flush()

    def abort(self) -> None:
        """Nothing to release: the caller owns ``out`` and discards it."""
