"""A push-driven, validating catar decoder: bytes in, events out (h11's ``Connection`` shape).

Spec: ``spec/catar.md`` § "Decoding" and § "Safety". The structure checked (record order,
``CA_FORMAT_*_SIZE_MAX`` from ``src/caformat.h``, file names, the GOODBYE table) is the one
casync's encoder writes (``src/caencoder.c``) and its decoder parses (``src/cadecoder.c``);
record layouts are in ``desync_ref.formats.catar``.

The caller hands bytes to ``receive_data`` (``b""`` once the input has ended) and asks
``next_event`` for what they complete, getting ``NEED_DATA`` when more input is needed. No
I/O happens here. Every record header is checked against the fixed size or casync's
maximum for its type before its body is waited for, so nothing is buffered or allocated
on the word of a size field beyond those maxima; a file's payload is handed out in blocks
of ``PAYLOAD_BLOCK`` bytes (the last one shorter) as soon as each block is complete. The
blocks do not depend on how the input was split, so neither does the event sequence.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from desync_ref.errors import InvalidFormat
from desync_ref.formats.catar import (
    ACL_PERMISSION_BITS,
    ENTRY_BODY,
    FIXED_SIZE,
    HEADER,
    MAJOR_LIMIT,
    META_RANK,
    MINOR_LIMIT,
    PROJID_MAX,
    REPEATABLE,
    SIZE_MAX,
    AclEntry,
    Entry,
    id_max,
    mtime_from_u64,
    valid_name,
)
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
    UINT64_MAX,
    feature_flags_are_normalized,
)
from desync_ref.formats.goodbye import GoodbyeItem, decode_goodbye_items, goodbye_size, siphash24

PAYLOAD_BLOCK: Final = 1024 * 1024
READ_BLOCK: Final = 1024 * 1024
_IFMT: Final = 0o170000
_NODE_TYPES: Final = (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFBLK, stat.S_IFCHR,
                      stat.S_IFIFO, stat.S_IFSOCK)
_ACL_LISTS: Final = (CA_FORMAT_ACL_USER, CA_FORMAT_ACL_GROUP, CA_FORMAT_ACL_DEFAULT_USER,
                     CA_FORMAT_ACL_DEFAULT_GROUP)


# --- events ----------------------------------------------------------------------------------

class NeedData:
    """``next_event``'s answer when the bytes received so far complete no event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class EntryEvent:
    """A node: ENTRY with all its metadata records and its final record (``entry.size``
    from the PAYLOAD header, ``entry.target`` from SYMLINK, ``entry.rdev`` from DEVICE).
    ``name`` is the FILENAME before it (None for the root); ``depth`` 0 is the root. A
    regular file's payload follows as ``PayloadEvent``s and a ``FileEndEvent``."""

    entry: Entry
    depth: int
    name: bytes | None = None


@dataclass(frozen=True, slots=True)
class PayloadEvent:
    """The next block of the current regular file's contents."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FileEndEvent:
    """The current regular file's payload is complete."""


@dataclass(frozen=True, slots=True)
class GoodbyeEvent:
    """The end of the directory entered at ``depth`` (its GOODBYE table checked)."""

    depth: int


@dataclass(frozen=True, slots=True)
class EndOfArchive:
    """The archive is complete and the input ended right after it."""


Event = EntryEvent | PayloadEvent | FileEndEvent | GoodbyeEvent | EndOfArchive


def _cstring(body: bytes, what: str) -> bytes:
    if len(body) < 2 or body[-1] != 0 or b"\0" in body[:-1]:
        raise InvalidFormat(f"{what} is not a NUL-terminated string")
    return body[:-1]


def _check_size(size: int, kind: int) -> None:
    """The record's size against its fixed size or casync's maximum, before its body."""
    fixed = FIXED_SIZE.get(kind)
    if fixed is not None:
        if size != fixed:
            raise InvalidFormat(f"record 0x{kind:016x} has size {size}, expected {fixed}")
        return
    limit = SIZE_MAX.get(kind)
    if limit is None or not HEADER.size < size <= limit:
        raise InvalidFormat(f"record 0x{kind:016x} has an invalid size {size}")


@dataclass(slots=True)
class _Dir:
    entry_offset: int
    items: list[GoodbyeItem] = field(default_factory=list)
    child_start: int = -1
    child_hash: int = 0
    last_name: bytes | None = None


_ENTRY, _META, _PAYLOAD, _CHILD, _DONE = range(5)


class CatarDecoder:
    """Validating catar decoder; see the module docstring for the protocol.

    After an ``InvalidFormat`` the decoder is dead: every later call raises it again, and
    ``error_offset`` says where the damage is (the record being read, or the end of the
    input when it ended short).

    ``on_record``, when set, sees every record as it is consumed: ``(offset, size, type,
    body)`` with the body after the 16-byte header (empty for PAYLOAD, whose contents come
    as events). The dissector (``desync_ref.audit``) reads the archive through it.
    """

    def __init__(self, on_record: Callable[[int, int, int, bytes], None] | None = None) -> None:
        self.on_record = on_record
        self.error_offset: int | None = None
        self._at = 0  # offset of the record being read
        self._buf = bytearray()
        self._pos = 0  # first unconsumed byte of _buf
        self._base = 0  # archive offset of _buf[0]
        self._eof = False
        self._error: InvalidFormat | None = None
        self._state = _ENTRY
        self._dirs: list[_Dir] = []
        self._flags: int | None = None
        self._entry: Entry | None = None  # the node being read (ENTRY seen)
        self._entry_start = 0
        self._entry_depth = 0
        self._rank = 0  # META_RANK of the last metadata record of the node
        self._name: bytes | None = None  # FILENAME of the node being read
        self._payload_left = 0

    @property
    def offset(self) -> int:
        """Archive offset of the first byte not yet decoded."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded (at most one record or payload block, plus
        what the last ``receive_data`` brought)."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """More input; ``b""`` says the input has ended."""
        if self._eof:
            raise RuntimeError("receive_data after the end of input")
        if not data:
            self._eof = True
            return
        if self._pos:
            # Drop what is decoded; only an incomplete record or block stays behind.
            del self._buf[:self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """The next event the input completes, or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                event = self._step()
                if event is not None:
                    return event
        except InvalidFormat as exc:
            self._error = exc
            self.error_offset = self._at
            raise

    # --- input helpers ---------------------------------------------------------------------

    def _truncated(self) -> InvalidFormat:
        self._at = self._base + len(self._buf)
        return InvalidFormat(f"archive is truncated at offset {self._base + len(self._buf)}")

    def _avail(self) -> int:
        return len(self._buf) - self._pos

    def _peek_header(self) -> tuple[int, int] | NeedData | None:
        """(size, type) of the next record without consuming it; None at a clean end of
        input, NEED_DATA while the header is incomplete."""
        avail = self._avail()
        self._at = self._base + self._pos
        if avail >= HEADER.size:
            size, kind = HEADER.unpack_from(self._buf, self._pos)
            return size, kind
        if not self._eof:
            return NEED_DATA
        if avail:
            raise self._truncated()
        return None

    def _record(self, size: int) -> bytes | None:
        """The body of the record at the current position once all ``size`` bytes are in
        (the record is then consumed); None while waiting. The caller has checked ``size``
        against the record type's maximum."""
        if self._avail() < size:
            if self._eof:
                raise self._truncated()
            return None
        body = bytes(memoryview(self._buf)[self._pos + HEADER.size:self._pos + size])
        if self.on_record is not None:
            self.on_record(self.offset, size, HEADER.unpack_from(self._buf, self._pos)[1], body)
        self._pos += size
        return body

    # --- the state machine -----------------------------------------------------------------

    def _step(self) -> Event | NeedData | None:
        """One transition: an event, NEED_DATA, or None to go on."""
        state = self._state
        if state == _PAYLOAD:
            return self._payload()
        header = self._peek_header()
        if isinstance(header, NeedData):
            return header
        if state == _ENTRY:
            return self._entry_record(header)
        if state == _META:
            return self._meta_record(header)
        if state == _CHILD:
            if header is None:
                raise self._truncated()
            return self._child_record(*header)
        # _DONE
        if header is None:
            return EndOfArchive()
        raise InvalidFormat(f"trailing data after the archive at offset {self.offset}")

    def _entry_record(self, header: tuple[int, int] | None) -> NeedData | None:
        if header is None:
            raise self._truncated() if self.offset else InvalidFormat("archive is empty")
        size, kind = header
        start = self.offset
        if kind != CA_FORMAT_ENTRY:
            raise InvalidFormat(f"expected an ENTRY record at offset {start}, "
                                f"found 0x{kind:016x} (not a catar?)")
        _check_size(size, kind)
        body = self._record(size)
        if body is None:
            return NEED_DATA
        flags, mode, fflags, uid, gid, mtime = ENTRY_BODY.unpack(body)
        if self._flags is None:
            if not feature_flags_are_normalized(flags):
                raise InvalidFormat(f"archive has invalid feature flags 0x{flags:016x}")
            self._flags = flags
        elif flags != self._flags:
            raise InvalidFormat(f"ENTRY at offset {start} has different feature flags")
        kind_bits = mode & _IFMT
        if kind_bits not in _NODE_TYPES or mode & ~(kind_bits | 0o7777):
            raise InvalidFormat(f"ENTRY at offset {start} has an invalid mode 0o{mode:o}")
        self._entry_start = start
        self._entry_depth = len(self._dirs)
        self._check_id("uid", uid, flags)
        self._check_id("gid", gid, flags)
        self._entry = Entry(flags, mode, fflags, uid, gid, mtime_from_u64(mtime))
        self._rank = 0
        self._state = _META
        return None

    def _emit_entry(self) -> EntryEvent:
        assert self._entry is not None
        event = EntryEvent(self._entry, self._entry_depth, self._name)
        self._entry, self._name = None, None
        return event

    def _meta_record(self, header: tuple[int, int] | None) -> Event | NeedData | None:
        e = self._entry
        assert e is not None
        mode = e.mode
        if header is None:
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                self._end_node()
                return self._emit_entry()
            raise self._truncated()
        size, kind = header
        start = self._entry_start
        rank = META_RANK.get(kind)
        if rank is None:
            return self._final_record(e, size, kind)
        if rank < self._rank or (rank == self._rank and kind not in REPEATABLE):
            raise InvalidFormat(f"record 0x{kind:016x} out of order in entry at {start}")
        _check_size(size, kind)
        body = self._record(size)
        if body is None:
            return NEED_DATA
        self._rank = rank
        _apply_meta(e, kind, body)
        self._check_meta(e, kind)
        return None

    # --- value checks: what casync's decoder accepts (cadecoder.c, validate_*) -------------

    def _where(self) -> str:
        """The node being read, by path below the root and archive offset."""
        names = [d.last_name or b"" for d in self._dirs[:self._entry_depth]]
        path = b"/".join(names).decode("utf-8", "backslashreplace") or "."
        return f"entry '{path}' at offset {self._entry_start}"

    def _check_id(self, what: str, value: int, flags: int) -> None:
        limit = id_max(flags)
        if value > limit:
            raise InvalidFormat(f"{self._where()} has {what} {value}, "
                                f"more than the archive's flags allow ({limit})")

    def _check_meta(self, e: Entry, kind: int) -> None:
        """The value a metadata record just stored, against what it can mean."""
        if kind in _ACL_LISTS:
            acl = {CA_FORMAT_ACL_USER: e.acl_user, CA_FORMAT_ACL_GROUP: e.acl_group,
                   CA_FORMAT_ACL_DEFAULT_USER: e.acl_default_user,
                   CA_FORMAT_ACL_DEFAULT_GROUP: e.acl_default_group}[kind][-1]
            self._check_id("an ACL entry for id", acl.id, e.feature_flags)
            perms = [acl.permissions]
        elif kind == CA_FORMAT_ACL_GROUP_OBJ:
            assert e.acl_group_obj is not None
            perms = [e.acl_group_obj]
        elif kind == CA_FORMAT_ACL_DEFAULT:
            assert e.acl_default is not None
            # UINT64_MAX: no such entry in the default ACL (casync allows it for the mask;
            # desync_ref's reader writes it for any object entry the kernel lacks).
            perms = [p for p in e.acl_default if p != UINT64_MAX]
        else:
            perms = []
            if kind == CA_FORMAT_QUOTA_PROJID and e.quota_projid > PROJID_MAX:
                raise InvalidFormat(f"{self._where()} has project id {e.quota_projid}, "
                                    f"more than 32 bits")
        for p in perms:
            if p & ~ACL_PERMISSION_BITS:
                raise InvalidFormat(f"{self._where()} has ACL permissions {p}, "
                                    f"not a set of r=4, w=2, x=1")

    def _final_record(self, e: Entry, size: int, kind: int) -> Event | NeedData:
        """The record after the metadata: PAYLOAD, SYMLINK or DEVICE, or (directories,
        fifos, sockets) the first record of what follows, left unconsumed."""
        mode, start = e.mode, self._entry_start
        if stat.S_ISREG(mode):
            if kind != CA_FORMAT_PAYLOAD or size < HEADER.size:
                raise InvalidFormat(f"regular file at offset {start} has no PAYLOAD record")
            if self.on_record is not None:
                self.on_record(self.offset, size, kind, b"")
            self._pos += HEADER.size
            e.size = self._payload_left = size - HEADER.size
            self._state = _PAYLOAD
            return self._emit_entry()
        if stat.S_ISLNK(mode):
            if kind != CA_FORMAT_SYMLINK:
                raise InvalidFormat(f"symlink at offset {start} has no SYMLINK record")
            _check_size(size, kind)
            body = self._record(size)
            if body is None:
                return NEED_DATA
            e.target = _cstring(body, "SYMLINK")
        elif stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            if kind != CA_FORMAT_DEVICE:
                raise InvalidFormat(f"device at offset {start} has no DEVICE record")
            _check_size(size, kind)
            body = self._record(size)
            if body is None:
                return NEED_DATA
            major, minor = struct.unpack("<2Q", body)
            if major >= MAJOR_LIMIT or minor >= MINOR_LIMIT:
                raise InvalidFormat(f"{self._where()} has device number {major}:{minor}, "
                                    f"out of Linux's range (major < {MAJOR_LIMIT}, "
                                    f"minor < {MINOR_LIMIT})")
            e.rdev = (major, minor)
        elif stat.S_ISDIR(mode):
            self._dirs.append(_Dir(start))
            self._state = _CHILD
            return self._emit_entry()
        elif not self._dirs:
            raise InvalidFormat(f"trailing data after the archive at offset {self.offset}")
        self._end_node()
        return self._emit_entry()

    def _payload(self) -> Event | NeedData:
        left = self._payload_left
        if not left:
            self._end_node()
            return FileEndEvent()
        n = min(PAYLOAD_BLOCK, left)
        if self._avail() < n:
            if self._eof:
                raise self._truncated()
            return NEED_DATA
        data = bytes(memoryview(self._buf)[self._pos:self._pos + n])
        self._pos += n
        self._payload_left = left - n
        return PayloadEvent(data)

    def _child_record(self, size: int, kind: int) -> Event | NeedData | None:
        start = self.offset
        if kind == CA_FORMAT_FILENAME:
            _check_size(size, kind)
            body = self._record(size)
            if body is None:
                return NEED_DATA
            name = _cstring(body, "FILENAME")
            if not valid_name(name):
                raise InvalidFormat(f"invalid file name {name!r} in archive")
            d = self._dirs[-1]
            if d.last_name is not None and name <= d.last_name:
                raise InvalidFormat(f"file names out of order: {d.last_name!r}, {name!r}")
            d.last_name = name
            d.child_start = start
            d.child_hash = siphash24(name)
            self._name = name
            self._state = _ENTRY
            return None
        if kind == CA_FORMAT_GOODBYE:
            d = self._dirs[-1]
            expected = goodbye_size(len(d.items))
            if size != expected:
                raise InvalidFormat(f"GOODBYE record has size {size}, expected {expected}")
            body = self._record(size)
            if body is None:
                return NEED_DATA
            items, (entry_distance, tail_size, marker) = decode_goodbye_items(body)
            want = sorted((start - i.offset, i.size, i.hash) for i in d.items)
            got = sorted((i.offset, i.size, i.hash) for i in items)
            if (marker != CA_FORMAT_GOODBYE_TAIL_MARKER or tail_size != size
                    or entry_distance != start - d.entry_offset or got != want):
                raise InvalidFormat(f"GOODBYE record at offset {start} does not match its directory")
            self._dirs.pop()
            depth = len(self._dirs)
            self._end_node()
            return GoodbyeEvent(depth)
        raise InvalidFormat(f"unexpected record 0x{kind:016x} at offset {start}")

    def _end_node(self) -> None:
        """The node that ends here becomes an item of its parent's GOODBYE table."""
        if not self._dirs:
            self._state = _DONE
            return
        d = self._dirs[-1]
        d.items.append(GoodbyeItem(d.child_start, self.offset - d.child_start, d.child_hash))
        self._state = _CHILD


def _apply_meta(e: Entry, kind: int, body: bytes) -> None:
    """Store one metadata record's body in ``e``."""
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
    elif kind in _ACL_LISTS:
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


def iter_events(read: Callable[[int], bytes], block: int = READ_BLOCK) -> Iterator[Event]:
    """Pull loop over a ``read(n)`` callable (a file, stdin): every event, ending with
    ``EndOfArchive``."""
    decoder = CatarDecoder()
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            decoder.receive_data(read(block))
            continue
        yield event
        if isinstance(event, EndOfArchive):
            return
