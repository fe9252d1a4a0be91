"""The catar archive: records, a streaming writer and a streaming, validating reader.

Spec: ``spec/catar.md``. Record layouts from casync ``src/caformat.h`` (``CaFormatEntry``
and the structures after it); the record order inside an entry and the field values
follow ``ca_encoder_get_entry_data`` (``src/caencoder.c``). The GOODBYE table lives in
``desync_ref.formats.goodbye``.

Both directions are sans-I/O: the writer hands bytes to a callable, the reader pulls
bytes from a ``read(n)`` callable. No allocation is sized by a field of the archive
beyond the per-record maxima casync itself uses (``CA_FORMAT_*_SIZE_MAX``); payloads are
handed out in bounded blocks.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from desync_ref.errors import InvalidFormat
from desync_ref.formats.constants import (
    CA_FORMAT_ACL_DEFAULT,
    CA_FORMAT_ACL_DEFAULT_GROUP,
    CA_FORMAT_ACL_DEFAULT_USER,
    CA_FORMAT_ACL_GROUP,
    CA_FORMAT_ACL_GROUP_OBJ,
    CA_FORMAT_ACL_USER,
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_GOODBYE_TAIL_MARKER,
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_XATTR,
    feature_flags_are_normalized,
)
from desync_ref.formats.goodbye import (
    GoodbyeItem,
    decode_goodbye_items,
    encode_goodbye,
    goodbye_size,
    siphash24,
)

HEADER: Final = struct.Struct("<2Q")
ENTRY_BODY: Final = struct.Struct("<6Q")
ENTRY_SIZE: Final = HEADER.size + ENTRY_BODY.size  # 64

# Largest record of each variable-size type casync accepts (caformat.h, *_SIZE_MAX).
NAME_MAX: Final = 255
SIZE_MAX: Final[dict[int, int]] = {
    CA_FORMAT_USER: 16 + 256,
    CA_FORMAT_GROUP: 16 + 256,
    CA_FORMAT_XATTR: 16 + 255 + 1 + 64 * 1024,
    CA_FORMAT_ACL_USER: 32 + 256,
    CA_FORMAT_ACL_GROUP: 32 + 256,
    CA_FORMAT_ACL_DEFAULT_USER: 32 + 256,
    CA_FORMAT_ACL_DEFAULT_GROUP: 32 + 256,
    CA_FORMAT_FCAPS: 16 + 64 * 1024,
    CA_FORMAT_SELINUX: 16 + 4096,
    CA_FORMAT_SYMLINK: 16 + 4096,
    CA_FORMAT_FILENAME: 16 + NAME_MAX + 1,
}
FIXED_SIZE: Final[dict[int, int]] = {
    CA_FORMAT_ENTRY: ENTRY_SIZE,
    CA_FORMAT_ACL_GROUP_OBJ: 24,
    CA_FORMAT_ACL_DEFAULT: 48,
    CA_FORMAT_QUOTA_PROJID: 24,
    CA_FORMAT_DEVICE: 32,
}
# Order of the metadata records after ENTRY (caformat.h comment; ca_encoder_get_entry_data).
# Records of equal rank may repeat (XATTR, the ACL lists); ranks never go down.
META_RANK: Final[dict[int, int]] = {
    CA_FORMAT_USER: 1,
    CA_FORMAT_GROUP: 2,
    CA_FORMAT_XATTR: 3,
    CA_FORMAT_ACL_USER: 4,
    CA_FORMAT_ACL_GROUP: 5,
    CA_FORMAT_ACL_GROUP_OBJ: 6,
    CA_FORMAT_ACL_DEFAULT: 7,
    CA_FORMAT_ACL_DEFAULT_USER: 8,
    CA_FORMAT_ACL_DEFAULT_GROUP: 9,
    CA_FORMAT_SELINUX: 10,
    CA_FORMAT_FCAPS: 11,
    CA_FORMAT_QUOTA_PROJID: 12,
}
REPEATABLE: Final = frozenset(
    {CA_FORMAT_XATTR, CA_FORMAT_ACL_USER, CA_FORMAT_ACL_GROUP,
     CA_FORMAT_ACL_DEFAULT_USER, CA_FORMAT_ACL_DEFAULT_GROUP}
)
PAYLOAD_BLOCK: Final = 1024 * 1024


@dataclass(slots=True)
class AclEntry:
    """ACL_USER / ACL_GROUP (and their DEFAULT_ twins): id, rwx bits, optional name."""

    id: int
    permissions: int
    name: bytes | None = None


@dataclass(slots=True)
class Entry:
    """One node: the ENTRY record plus every metadata record that follows it (§ "Entry")."""

    feature_flags: int
    mode: int
    flags: int = 0
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    user: bytes | None = None
    group: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    acl_user: list[AclEntry] = field(default_factory=list)
    acl_group: list[AclEntry] = field(default_factory=list)
    acl_group_obj: int | None = None
    acl_default: tuple[int, int, int, int] | None = None
    acl_default_user: list[AclEntry] = field(default_factory=list)
    acl_default_group: list[AclEntry] = field(default_factory=list)
    selinux: bytes | None = None
    fcaps: bytes | None = None
    quota_projid: int = 0
    size: int = 0  # payload bytes of a regular file
    target: bytes | None = None  # symlink target
    rdev: tuple[int, int] | None = None  # (major, minor) of a device


def valid_name(name: bytes) -> bool:
    """A FILENAME casync would write: one path component (§ "FILENAME")."""
    return (0 < len(name) <= NAME_MAX and name not in (b".", b"..")
            and b"/" not in name and b"\0" not in name)


def _string_record(kind: int, value: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(value) + 1, kind) + value + b"\0"


def _acl_records(kind: int, entries: list[AclEntry]) -> Iterator[bytes]:
    for e in entries:
        name = e.name + b"\0" if e.name is not None else b""
        yield struct.pack("<4Q", 32 + len(name), kind, e.id, e.permissions) + name


def encode_entry(e: Entry) -> bytes:
    """ENTRY and its metadata records, ending with the PAYLOAD header, SYMLINK or DEVICE."""
    parts = [HEADER.pack(ENTRY_SIZE, CA_FORMAT_ENTRY),
             ENTRY_BODY.pack(e.feature_flags, e.mode, e.flags, e.uid, e.gid, e.mtime)]
    if e.user is not None:
        parts.append(_string_record(CA_FORMAT_USER, e.user))
    if e.group is not None:
        parts.append(_string_record(CA_FORMAT_GROUP, e.group))
    for name, value in e.xattrs:
        parts.append(HEADER.pack(HEADER.size + len(name) + 1 + len(value), CA_FORMAT_XATTR))
        parts += [name, b"\0", value]
    parts += _acl_records(CA_FORMAT_ACL_USER, e.acl_user)
    parts += _acl_records(CA_FORMAT_ACL_GROUP, e.acl_group)
    if e.acl_group_obj is not None:
        parts.append(struct.pack("<3Q", 24, CA_FORMAT_ACL_GROUP_OBJ, e.acl_group_obj))
    if e.acl_default is not None:
        parts.append(struct.pack("<6Q", 48, CA_FORMAT_ACL_DEFAULT, *e.acl_default))
    parts += _acl_records(CA_FORMAT_ACL_DEFAULT_USER, e.acl_default_user)
    parts += _acl_records(CA_FORMAT_ACL_DEFAULT_GROUP, e.acl_default_group)
    if e.selinux is not None:
        parts.append(_string_record(CA_FORMAT_SELINUX, e.selinux))
    if e.fcaps is not None:
        parts.append(HEADER.pack(HEADER.size + len(e.fcaps), CA_FORMAT_FCAPS) + e.fcaps)
    if e.quota_projid:
        parts.append(struct.pack("<3Q", 24, CA_FORMAT_QUOTA_PROJID, e.quota_projid))
    if stat.S_ISREG(e.mode):
        parts.append(HEADER.pack(HEADER.size + e.size, CA_FORMAT_PAYLOAD))
    elif stat.S_ISLNK(e.mode):
        parts.append(_string_record(CA_FORMAT_SYMLINK, e.target or b""))
    elif stat.S_ISBLK(e.mode) or stat.S_ISCHR(e.mode):
        major, minor = e.rdev or (0, 0)
        parts.append(struct.pack("<4Q", 32, CA_FORMAT_DEVICE, major, minor))
    return b"".join(parts)


@dataclass(slots=True)
class _Dir:
    entry_offset: int
    items: list[GoodbyeItem] = field(default_factory=list)
    child_start: int = -1
    child_hash: int = 0
    last_name: bytes | None = None


class CatarWriter:
    """Serializes a tree depth-first: ``entry``, ``payload``, ``begin_child``/``end_child``,
    ``end_dir``. Tracks offsets so it can write each GOODBYE table (§ "GOODBYE")."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.offset = 0
        self._dirs: list[_Dir] = []

    def _emit(self, data: bytes) -> None:
        self._write(data)
        self.offset += len(data)

    def entry(self, e: Entry) -> None:
        start = self.offset
        self._emit(encode_entry(e))
        if stat.S_ISDIR(e.mode):
            self._dirs.append(_Dir(start))

    def payload(self, data: bytes) -> None:
        self._emit(data)

    def begin_child(self, name: bytes) -> None:
        d = self._dirs[-1]
        if not valid_name(name):
            raise InvalidFormat(f"invalid file name {name!r}")
        if d.last_name is not None and name <= d.last_name:
            raise InvalidFormat(f"file names out of order: {d.last_name!r}, {name!r}")
        d.last_name = name
        d.child_start = self.offset
        d.child_hash = siphash24(name)
        self._emit(_string_record(CA_FORMAT_FILENAME, name))

    def end_child(self) -> None:
        d = self._dirs[-1]
        d.items.append(GoodbyeItem(d.child_start, self.offset - d.child_start, d.child_hash))

    def end_dir(self) -> None:
        d = self._dirs.pop()
        here = self.offset
        items = [GoodbyeItem(here - i.offset, i.size, i.hash) for i in d.items]
        self._emit(encode_goodbye(items, here - d.entry_offset))


# --- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EntryEvent:
    entry: Entry
    depth: int


@dataclass(frozen=True, slots=True)
class FilenameEvent:
    name: bytes
    depth: int


@dataclass(frozen=True, slots=True)
class GoodbyeEvent:
    """The end of the directory entered at ``depth``."""

    depth: int


Event = EntryEvent | FilenameEvent | GoodbyeEvent

_NODE_TYPES: Final = (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFBLK, stat.S_IFCHR,
                      stat.S_IFIFO, stat.S_IFSOCK)


def _cstring(body: bytes, what: str) -> bytes:
    if len(body) < 2 or body[-1] != 0 or b"\0" in body[:-1]:
        raise InvalidFormat(f"{what} is not a NUL-terminated string")
    return body[:-1]


class CatarReader:
    """Pulls records from ``read`` and returns events; checks everything casync checks
    about structure: record order, sizes, name order and validity, GOODBYE tables."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.offset = 0
        self._dirs: list[_Dir] = []
        self._pending: tuple[int, int] | None = None  # a header read ahead
        self._payload_left = 0
        self._flags: int | None = None
        self._state = "entry"  # entry | child | done
        self._file_open = False

    # low level
    def _exact(self, n: int) -> bytes:
        data = self._exact_or_eof(n)
        if data is None:
            raise InvalidFormat(f"archive is truncated at offset {self.offset}")
        return data

    def _exact_or_eof(self, n: int) -> bytes | None:
        data = self._read(n)
        if not data and n:
            return None
        while len(data) < n:
            more = self._read(n - len(data))
            if not more:
                raise InvalidFormat(f"archive is truncated at offset {self.offset + len(data)}")
            data += more
        self.offset += n
        return data

    def _header(self) -> tuple[int, int] | None:
        if self._pending is not None:
            h, self._pending = self._pending, None
            return h
        data = self._exact_or_eof(HEADER.size)
        if data is None:
            return None
        size, kind = HEADER.unpack(data)
        return size, kind

    def _body(self, size: int, kind: int) -> bytes:
        fixed = FIXED_SIZE.get(kind)
        if fixed is not None and size != fixed:
            raise InvalidFormat(f"record 0x{kind:016x} has size {size}, expected {fixed}")
        limit = SIZE_MAX.get(kind)
        if fixed is None and (limit is None or not HEADER.size < size <= limit):
            raise InvalidFormat(f"record 0x{kind:016x} has an invalid size {size}")
        return self._exact(size - HEADER.size)

    # payload
    @property
    def payload_left(self) -> int:
        return self._payload_left

    def read_payload(self, limit: int = PAYLOAD_BLOCK) -> bytes:
        """The next block of the current file's payload (b"" when it is all read)."""
        n = min(limit, self._payload_left)
        if n == 0:
            return b""
        data = self._exact(n)
        self._payload_left -= n
        return data

    def payload_blocks(self) -> Iterator[bytes]:
        while self._payload_left:
            yield self.read_payload()

    # events
    def next(self) -> Event | None:
        """The next event, or None at the end of a complete archive."""
        while self._payload_left:
            self.read_payload()
        if self._file_open:
            self._file_open = False
            self._end_node()
        if self._state == "entry":
            return self._entry()
        header = self._header()
        if self._state == "done":
            if header is not None:
                raise InvalidFormat(f"trailing data after the archive at offset {self.offset - 16}")
            return None
        if header is None:
            raise InvalidFormat(f"archive is truncated at offset {self.offset}")
        return self._child(*header)

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next()) is not None:
            yield event

    def _child(self, size: int, kind: int) -> Event:
        depth = len(self._dirs)
        if kind == CA_FORMAT_FILENAME:
            name = _cstring(self._body(size, kind), "FILENAME")
            if not valid_name(name):
                raise InvalidFormat(f"invalid file name {name!r} in archive")
            d = self._dirs[-1]
            if d.last_name is not None and name <= d.last_name:
                raise InvalidFormat(f"file names out of order: {d.last_name!r}, {name!r}")
            d.last_name = name
            d.child_start = self.offset - size
            d.child_hash = siphash24(name)
            self._state = "entry"
            return FilenameEvent(name, depth)
        if kind == CA_FORMAT_GOODBYE:
            self._goodbye(size)
            return GoodbyeEvent(depth - 1)
        raise InvalidFormat(f"unexpected record 0x{kind:016x} at offset {self.offset - 16}")

    def _goodbye(self, size: int) -> None:
        d = self._dirs.pop()
        start = self.offset - HEADER.size
        if size != goodbye_size(len(d.items)):
            raise InvalidFormat(f"GOODBYE record has size {size}, expected "
                                f"{goodbye_size(len(d.items))}")
        items, (entry_distance, tail_size, marker) = decode_goodbye_items(
            self._exact(size - HEADER.size))
        want = sorted((start - i.offset, i.size, i.hash) for i in d.items)
        got = sorted((i.offset, i.size, i.hash) for i in items)
        if (marker != CA_FORMAT_GOODBYE_TAIL_MARKER or tail_size != size
                or entry_distance != start - d.entry_offset or got != want):
            raise InvalidFormat(f"GOODBYE record at offset {start} does not match its directory")
        self._end_node()

    def _end_node(self) -> None:
        """The node just read is complete: it becomes an item of its parent's table."""
        if not self._dirs:
            self._state = "done"
            return
        d = self._dirs[-1]
        end = self.offset - (HEADER.size if self._pending is not None else 0)
        d.items.append(GoodbyeItem(d.child_start, end - d.child_start, d.child_hash))
        self._state = "child"

    def _entry(self) -> Event:
        header = self._header()
        if header is None:
            raise InvalidFormat(f"archive is truncated at offset {self.offset}"
                                if self.offset else "archive is empty")
        size, kind = header
        start = self.offset - HEADER.size
        if kind != CA_FORMAT_ENTRY:
            raise InvalidFormat(f"expected an ENTRY record at offset {start}, "
                                f"found 0x{kind:016x} (not a catar?)")
        flags, mode, fflags, uid, gid, mtime = ENTRY_BODY.unpack(self._body(size, kind))
        if self._flags is None:
            if not feature_flags_are_normalized(flags):
                raise InvalidFormat(f"archive has invalid feature flags 0x{flags:016x}")
            self._flags = flags
        elif flags != self._flags:
            raise InvalidFormat(f"ENTRY at offset {start} has different feature flags")
        if stat.S_IFMT(mode) not in _NODE_TYPES or mode & ~(stat.S_IFMT(mode) | 0o7777):
            raise InvalidFormat(f"ENTRY at offset {start} has an invalid mode 0o{mode:o}")
        e = Entry(flags, mode, fflags, uid, gid, mtime)
        depth = len(self._dirs)
        self._read_meta(e, start)
        if stat.S_ISDIR(mode):
            self._dirs.append(_Dir(start))
            self._state = "child"
        elif not stat.S_ISREG(mode):
            self._end_node()
        return EntryEvent(e, depth)

    def _read_meta(self, e: Entry, start: int) -> None:
        rank, last = 0, 0
        while True:
            header = self._header()
            if header is None:
                if stat.S_ISDIR(e.mode) or stat.S_ISREG(e.mode) or stat.S_ISLNK(e.mode) \
                        or stat.S_ISBLK(e.mode) or stat.S_ISCHR(e.mode):
                    raise InvalidFormat(f"archive is truncated at offset {self.offset}")
                return
            size, kind = header
            r = META_RANK.get(kind)
            if r is None:
                self._final_record(e, size, kind, start)
                return
            if r < rank or (r == rank and kind not in REPEATABLE):
                raise InvalidFormat(f"record 0x{kind:016x} out of order in entry at {start}")
            rank = r
            body = self._body(size, kind)
            self._meta(e, kind, body, last)
            last = kind

    def _meta(self, e: Entry, kind: int, body: bytes, last: int) -> None:
        if kind == CA_FORMAT_USER:
            e.user = _cstring(body, "USER")
        elif kind == CA_FORMAT_GROUP:
            e.group = _cstring(body, "GROUP")
        elif kind == CA_FORMAT_XATTR:
            name, sep, value = body.partition(b"\0")
            if not sep or not name:
                raise InvalidFormat("XATTR record without a name")
            if e.xattrs and name <= e.xattrs[-1][0]:
                raise InvalidFormat(f"XATTR records out of order ({name!r})")
            e.xattrs.append((name, value))
        elif kind in (CA_FORMAT_ACL_USER, CA_FORMAT_ACL_GROUP, CA_FORMAT_ACL_DEFAULT_USER,
                      CA_FORMAT_ACL_DEFAULT_GROUP):
            if len(body) < 16:
                raise InvalidFormat("ACL record is too short")
            ident, perms = struct.unpack_from("<2Q", body)
            acl_name = _cstring(body[16:], "ACL name") if len(body) > 16 else None
            target = {CA_FORMAT_ACL_USER: e.acl_user, CA_FORMAT_ACL_GROUP: e.acl_group,
                      CA_FORMAT_ACL_DEFAULT_USER: e.acl_default_user,
                      CA_FORMAT_ACL_DEFAULT_GROUP: e.acl_default_group}[kind]
            target.append(AclEntry(ident, perms, acl_name))
        elif kind == CA_FORMAT_ACL_GROUP_OBJ:
            (e.acl_group_obj,) = struct.unpack("<Q", body)
        elif kind == CA_FORMAT_ACL_DEFAULT:
            a, b, c, d = struct.unpack("<4Q", body)
            e.acl_default = (a, b, c, d)
        elif kind == CA_FORMAT_SELINUX:
            e.selinux = _cstring(body, "SELINUX")
        elif kind == CA_FORMAT_FCAPS:
            e.fcaps = body
        elif kind == CA_FORMAT_QUOTA_PROJID:
            (e.quota_projid,) = struct.unpack("<Q", body)

    def _final_record(self, e: Entry, size: int, kind: int, start: int) -> None:
        mode = e.mode
        if stat.S_ISREG(mode):
            if kind != CA_FORMAT_PAYLOAD or size < HEADER.size:
                raise InvalidFormat(f"regular file at offset {start} has no PAYLOAD record")
            e.size = self._payload_left = size - HEADER.size
            self._file_open = True
        elif stat.S_ISLNK(mode):
            if kind != CA_FORMAT_SYMLINK:
                raise InvalidFormat(f"symlink at offset {start} has no SYMLINK record")
            e.target = _cstring(self._body(size, kind), "SYMLINK")
        elif stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            if kind != CA_FORMAT_DEVICE:
                raise InvalidFormat(f"device at offset {start} has no DEVICE record")
            major, minor = struct.unpack("<2Q", self._body(size, kind))
            e.rdev = (major, minor)
        else:
            # Directories, fifos and sockets: the record belongs to what follows.
            self._pending = (size, kind)
            if not stat.S_ISDIR(mode) and not self._dirs:
                raise InvalidFormat(f"trailing data after the archive at offset {self.offset - 16}")
