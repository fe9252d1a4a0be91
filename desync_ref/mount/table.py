"""The entry table of a mounted archive: every node of a catar in a few flat arrays, built
by one pass over the archive stream.

Spec: ``spec/mount-tree.md`` § "The entry table". casync's ``casync mount`` (``src/cafuse.c``)
seeks through the archive for each request instead; a table built once answers every
lookup, ``getattr`` and ``readdir`` without touching the archive again, and keeps for a
regular file only where its payload starts in the archive stream.

What is presented for a node is what ``untar`` (``fs/write.py``) leaves on disk: the same
owner (names resolved as there), the mode, the mtime when the archive has times, a
symlink's target, a device's numbers, and as xattrs the XATTR records, the file
capabilities (``security.capability``) and the SELinux label (``security.selinux``).

Memory: the fixed columns take 60 bytes per entry (array items: parent, mode, uid, gid 4
each; mtime, size, payload offset, name end 8 each; first child, child count, child slot 4
each), plus the name's bytes in one shared ``bytearray``; symlink targets, device numbers,
xattrs and chattr flags sit in a dict by entry number for the entries that have them.
"""

from __future__ import annotations

import bisect
import os
import stat
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from desync_ref.errors import InvalidFormat
from desync_ref.formats import constants as c
from desync_ref.formats.catar import Entry
from desync_ref.formats.catar_decoder import READ_BLOCK, CatarDecoder
from desync_ref.formats.flag_rules import flags_to_chattr, time_granularity
from desync_ref.fs.write import entry_owner
from desync_ref.operations.untar import TreeWalker

ROOT = 0


@dataclass(frozen=True, slots=True)
class Extra:
    """What few entries carry: kept only for the entries that have one of them."""

    target: bytes | None = None  # symlink
    rdev: int = 0  # device number (os.makedev)
    xattrs: tuple[tuple[bytes, bytes], ...] = ()  # as untar sets them, sorted by name
    chattr: int = 0  # the ENTRY's flags (FS_IOC_GETFLAGS, as casync mount presents)


_NO_EXTRA = Extra()


class EntryTable:
    """Entries numbered in archive order (0 is the root). A directory's children are
    ``children[first[d]:first[d] + count[d]]``, sorted by name as the archive stores them."""

    def __init__(self, feature_flags: int) -> None:
        self.feature_flags = feature_flags
        self.parent = array("I")
        self.mode = array("I")
        self.uid = array("I")
        self.gid = array("I")
        self.mtime = array("q")
        self.size = array("Q")  # payload bytes of a regular file, len(target) of a symlink
        self.offset = array("Q")  # a regular file's payload start in the archive stream
        self.name_end = array("Q", [0])  # entry i's name is names[name_end[i]:name_end[i+1]]
        self.names = bytearray()
        self.first = array("I")
        self.count = array("I")
        self.children = array("I")
        self.extra: dict[int, Extra] = {}

    def __len__(self) -> int:
        return len(self.mode)

    def name(self, i: int) -> bytes:
        return bytes(self.names[self.name_end[i]:self.name_end[i + 1]])

    def extra_of(self, i: int) -> Extra:
        return self.extra.get(i, _NO_EXTRA)

    def child_list(self, d: int) -> array[int]:
        start = self.first[d]
        return self.children[start:start + self.count[d]]

    def lookup(self, path: bytes) -> int | None:
        """The entry at ``path`` (``/``-separated, below the root), None if there is none
        or a component on the way is not a directory."""
        i = ROOT
        for part in path.split(b"/"):
            if not part:
                continue
            if not stat.S_ISDIR(self.mode[i]):
                return None
            lo = self.first[i]
            hi = lo + self.count[i]
            j = bisect.bisect_left(self.children, part, lo, hi, key=self._slot_name)
            if j == hi or self.name(self.children[j]) != part:
                return None
            i = self.children[j]
        return i

    def _slot_name(self, i: int) -> bytes:
        return self.names[self.name_end[i]:self.name_end[i + 1]]  # type: ignore[return-value]


class TableBuilder:
    """An untar ``Sink`` that fills an ``EntryTable``; it reads the payload start of each
    regular file from ``decoder.offset`` (the decoder has just consumed the PAYLOAD header
    when the walker calls ``begin_file``)."""

    def __init__(self, decoder: CatarDecoder) -> None:
        self.decoder = decoder
        self.table: EntryTable | None = None
        self._open: list[tuple[int, list[int]]] = []  # directories being read, their children
        self._owners: dict[tuple[bytes | None, bytes | None], tuple[int, int]] = {}
        self._now = time.time_ns()  # the mtime untar leaves when the archive has none
        self.complete = False

    def _add(self, path: list[bytes], e: Entry, *, size: int = 0, offset: int = 0) -> int:
        t = self.table
        if t is None:
            t = self.table = EntryTable(e.feature_flags)
        i = len(t)
        parent = self._open[-1][0] if self._open else ROOT
        if self._open:
            self._open[-1][1].append(i)
        uid, gid = self._owner(e)
        kind = stat.S_IFMT(e.mode)
        mode = stat.S_IFLNK | 0o777 if kind == stat.S_IFLNK else e.mode  # as symlink(2) makes it
        mtime = e.mtime if time_granularity(e.feature_flags) is not None else self._now
        t.parent.append(parent)
        t.mode.append(mode)
        t.uid.append(uid)
        t.gid.append(gid)
        t.mtime.append(mtime)
        t.offset.append(offset)
        name = path[-1] if path else b""
        t.names += name
        t.name_end.append(len(t.names))
        t.first.append(0)
        t.count.append(0)
        xattrs = list(e.xattrs)
        if e.fcaps is not None:
            xattrs.append((b"security.capability", e.fcaps))
        if e.selinux is not None:
            xattrs.append((b"security.selinux", e.selinux + b"\0"))
        chattr = flags_to_chattr(e.flags & e.feature_flags) if kind in (
            stat.S_IFREG, stat.S_IFDIR) else 0
        rdev = os.makedev(*e.rdev) if e.rdev is not None else 0
        if e.target is not None:
            size = len(e.target)
        t.size.append(size)
        if e.target is not None or rdev or xattrs or chattr:
            t.extra[i] = Extra(e.target, rdev, tuple(sorted(xattrs)), chattr)
        return i

    def _owner(self, e: Entry) -> tuple[int, int]:
        flags = e.feature_flags
        if flags & c.CA_FORMAT_WITH_UIDS:
            return e.uid, e.gid
        if not flags & c.CA_FORMAT_WITH_USER_NAMES:
            return os.geteuid(), os.getegid()  # untar leaves the files it makes as they are
        key = (e.user, e.group)
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = entry_owner(e)
        return owner

    # Sink
    def directory(self, path: list[bytes], e: Entry) -> None:
        self._open.append((self._add(path, e), []))

    def end_directory(self, path: list[bytes], e: Entry) -> None:
        t = self.table
        assert t is not None
        d, kids = self._open.pop()
        t.first[d] = len(t.children)
        t.count[d] = len(kids)
        t.children.extend(kids)

    def begin_file(self, path: list[bytes], e: Entry) -> None:
        self._add(path, e, size=e.size, offset=self.decoder.offset)

    def file_data(self, data: bytes) -> None:
        pass

    def end_file(self) -> None:
        pass

    def other(self, path: list[bytes], e: Entry) -> None:
        self._add(path, e)

    def close(self) -> None:
        self.complete = True

    def abort(self) -> None:
        self.table = None


def build_table(blocks: Iterable[bytes]) -> EntryTable:
    """One pass over the archive stream given as consecutive blocks."""
    decoder = CatarDecoder()
    builder = TableBuilder(decoder)
    walker = TreeWalker(builder)
    for data in blocks:
        walker.feed(decoder, data)
    walker.feed(decoder, b"")
    if not builder.complete or builder.table is None:
        raise InvalidFormat("archive ended early")
    return builder.table


def file_blocks(read: Callable[[int], bytes]) -> Iterable[bytes]:
    """The blocks of a file read from its start to its end."""
    while data := read(READ_BLOCK):
        yield data
