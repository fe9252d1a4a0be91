"""The catar archive: records, their limits and a streaming writer.

Spec: ``spec/catar.md``. Record layouts from casync ``src/caformat.h`` (``CaFormatEntry``
and the structures after it); the record order inside an entry and the field values
follow ``ca_encoder_get_entry_data`` (``src/caencoder.c``). The GOODBYE table lives in
``desync_ref.formats.goodbye``; the push-driven, validating decoder in
``desync_ref.formats.catar_decoder``.

The writer is sans-I/O: it hands bytes to a callable and never looks at what that does.
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
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_XATTR,
)
from desync_ref.formats.goodbye import GoodbyeItem, encode_goodbye, siphash24

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
# Value ranges casync's decoder accepts (cadecoder.c, validate_major, validate_minor,
# validate_uid_gid, validate_acl_permissions, validate_format_quota_projid): what Linux can
# mean by a device number, an owner (``(uid_t) -1`` is "leave unchanged"), rwx bits, a
# project id.
MAJOR_LIMIT: Final = 1 << 12
MINOR_LIMIT: Final = 1 << 20
ACL_PERMISSION_BITS: Final = 0o7
PROJID_MAX: Final = 0xFFFFFFFF
_U64: Final = 1 << 64


def id_max(feature_flags: int) -> int:
    """Largest uid/gid an archive with these flags can hold; 0 if it stores none."""
    if feature_flags & CA_FORMAT_WITH_16BIT_UIDS:
        return 0xFFFF
    if feature_flags & CA_FORMAT_WITH_32BIT_UIDS:
        return 0xFFFFFFFE
    return 0


def mtime_to_u64(ns: int) -> int:
    """An mtime as the ENTRY field holds it: times before 1970 as the two's complement, as
    casync's ``timespec_to_nsec`` (``src/time-util.h``) leaves them."""
    return ns % _U64


def mtime_from_u64(raw: int) -> int:
    """The ENTRY field as a signed time, as desync reads it (``format.go``,
    ``time.Unix(0, int64(mtime))``)."""
    return raw - _U64 if raw >= _U64 >> 1 else raw


REPEATABLE: Final = frozenset(
    {CA_FORMAT_XATTR, CA_FORMAT_ACL_USER, CA_FORMAT_ACL_GROUP,
     CA_FORMAT_ACL_DEFAULT_USER, CA_FORMAT_ACL_DEFAULT_GROUP}
)


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
    mtime: int = 0  # ns since 1970, negative before (stored as the two's complement)
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
             ENTRY_BODY.pack(e.feature_flags, e.mode, e.flags, e.uid, e.gid,
                             mtime_to_u64(e.mtime))]
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
