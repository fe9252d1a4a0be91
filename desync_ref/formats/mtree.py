"""mtree: desync's ``#mtree v1.0`` listing of a catar, caidx or directory (``mtreefs.go``).

Spec: ``spec/catar.md`` § "mtree output". Lines and escaping are desync's, including its
quirk of space-padding the nanoseconds of directories, symlinks and devices (``%9d``)
while zero-padding those of files (``%09d``). Fifos and sockets are not listed.
"""

from __future__ import annotations

import hashlib
import stat
from typing import TextIO

from desync_ref.formats.catar import Entry
from desync_ref.formats.chunk import DIGEST_SHA512_256


def mtree_name(raw: bytes) -> str:
    return "".join(f"\\{b:03o}" if b in b"\\# " or b < 32 or b > 126 else chr(b) for b in raw)


def _time(ns: int, zero_pad: bool) -> str:
    sec, frac = divmod(ns, 10**9)
    return f"time={sec}.{frac:09d}" if zero_pad else f"time={sec}.{frac:9d}"


class MtreeSink:
    def __init__(self, out: TextIO, digest: str = DIGEST_SHA512_256) -> None:
        self.out = out
        self.digest = digest
        self._file: tuple[list[bytes], Entry, hashlib._Hash]
        out.write("#mtree v1.0\n")

    def _line(self, path: list[bytes], attrs: list[str]) -> None:
        name = mtree_name(b"/".join(path) if path else b".")
        self.out.write(" ".join([name, *attrs]) + "\n")

    def _ids(self, e: Entry) -> list[str]:
        return [f"uid={e.uid}", f"gid={e.gid}"]

    def directory(self, path: list[bytes], e: Entry) -> None:
        self._line(path, ["type=dir", f"mode={e.mode & 0o777:04o}", *self._ids(e),
                          _time(e.mtime, False)])

    def end_directory(self, path: list[bytes], e: Entry) -> None:
        pass

    def begin_file(self, path: list[bytes], e: Entry) -> None:
        sha256 = self.digest != DIGEST_SHA512_256
        self._file = (path, e, hashlib.sha256() if sha256 else hashlib.new("sha512_256"))

    def file_data(self, data: bytes) -> None:
        self._file[2].update(data)

    def end_file(self) -> None:
        path, e, h = self._file
        key = "sha256digest" if self.digest != DIGEST_SHA512_256 else "sha512256digest"
        self._line(path, ["type=file", f"mode={e.mode & 0o777:04o}", *self._ids(e),
                          f"size={e.size}", _time(e.mtime, True), f"{key}={h.hexdigest()}"])

    def other(self, path: list[bytes], e: Entry) -> None:
        kind = stat.S_IFMT(e.mode)
        if kind == stat.S_IFLNK:
            self._line(path, ["type=link", f"mode={e.mode & 0o777:04o}",
                              f"target={mtree_name(e.target or b'')}", *self._ids(e),
                              _time(e.mtime, False)])
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            t = "type=char" if kind == stat.S_IFCHR else "type=block"
            self._line(path, [t, f"mode={e.mode & 0o777:04o}", *self._ids(e),
                              _time(e.mtime, False)])

    def close(self) -> None:
        self.out.flush()

    def abort(self) -> None:
        """Nothing to release: the caller owns ``out``."""
