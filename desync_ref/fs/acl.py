"""POSIX ACLs of a node as casync stores them (ACL_USER, ACL_GROUP, ACL_GROUP_OBJ, ACL_DEFAULT…).

Spec: ``spec/catar.md`` § "ACLs". Read from the kernel's ``system.posix_acl_*`` xattrs
(layout of ``posix_acl_xattr_header``/``_entry`` in linux ``include/uapi/linux/posix_acl_xattr.h``);
what is kept and how it is sorted follows casync ``ca_encoder_node_process_acl`` and
``compare_acl_entry`` (``src/caencoder.c``); writing back follows ``cadecoder.c``.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable
from typing import Final, Protocol

from desync_ref.formats import constants as c
from desync_ref.formats.catar import AclEntry, Entry

ACL_ACCESS: Final = "system.posix_acl_access"
ACL_DEFAULT: Final = "system.posix_acl_default"
ACL_VERSION: Final = 2
TAG_USER_OBJ, TAG_USER, TAG_GROUP_OBJ, TAG_GROUP, TAG_MASK, TAG_OTHER = 1, 2, 4, 8, 0x10, 0x20
UNDEFINED: Final = c.UINT64_MAX  # casync's "no default ACL entry of this kind"
_ENTRY = struct.Struct("<HHI")


class NameSource(Protocol):
    def user(self, uid: int) -> bytes | None: ...
    def group(self, gid: int) -> bytes | None: ...


def _get(fd: int | None, parent: int, name: bytes, attr: str) -> bytes | None:
    try:
        if fd is not None:
            return os.getxattr(fd, attr)
        return os.getxattr(f"/proc/self/fd/{parent}/".encode() + name, attr)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EBADF, errno.ENOENT, errno.ELOOP):
            return None
        raise


def parse_acl(raw: bytes) -> list[tuple[int, int, int]]:
    """(tag, perm, id) triples of a raw ACL xattr."""
    if len(raw) < 4 or (len(raw) - 4) % _ENTRY.size or struct.unpack_from("<I", raw)[0] != 2:
        return []
    return [(t, p & 7, i) for t, p, i in _ENTRY.iter_unpack(raw[4:])]


def _sort(entries: list[AclEntry]) -> list[AclEntry]:
    return sorted(entries, key=lambda e: (e.id, e.name is not None, e.name or b"", e.permissions))


def read_acls(fd: int | None, parent: int, name: bytes, e: Entry, names: NameSource) -> None:
    flags = e.feature_flags
    ids = bool(flags & c.CA_FORMAT_WITH_UIDS)
    with_names = bool(flags & c.CA_FORMAT_WITH_USER_NAMES)

    def collect(raw: bytes | None) -> tuple[dict[int, int], list[AclEntry], list[AclEntry]]:
        objs: dict[int, int] = {}
        users: list[AclEntry] = []
        groups: list[AclEntry] = []
        for tag, perm, ident in parse_acl(raw or b""):
            if tag in (TAG_USER, TAG_GROUP):
                lookup: Callable[[int], bytes | None] = names.user if tag == TAG_USER else names.group
                item = AclEntry(ident if ids else 0, perm, lookup(ident) if with_names else None)
                (users if tag == TAG_USER else groups).append(item)
            else:
                objs[tag] = perm
        return objs, _sort(users), _sort(groups)

    objs, e.acl_user, e.acl_group = collect(_get(fd, parent, name, ACL_ACCESS))
    if TAG_GROUP_OBJ in objs and TAG_MASK in objs:
        e.acl_group_obj = objs[TAG_GROUP_OBJ]
    if stat.S_ISDIR(e.mode):
        dobjs, e.acl_default_user, e.acl_default_group = collect(_get(fd, parent, name, ACL_DEFAULT))
        if dobjs:
            e.acl_default = tuple(dobjs.get(t, UNDEFINED)  # type: ignore[assignment]
                                  for t in (TAG_USER_OBJ, TAG_GROUP_OBJ, TAG_OTHER, TAG_MASK))


def build_acl(mode: int, users: list[tuple[int, int]], groups: list[tuple[int, int]],
              group_obj: int | None, mask: int | None = None) -> bytes:
    """A raw access ACL from the mode's bits plus named entries (for restoring)."""
    entries = [(TAG_USER_OBJ, (mode >> 6) & 7, 0xFFFFFFFF)]
    entries += [(TAG_USER, p, i) for i, p in sorted(users)]
    go = group_obj if group_obj is not None else (mode >> 3) & 7
    entries.append((TAG_GROUP_OBJ, go, 0xFFFFFFFF))
    entries += [(TAG_GROUP, p, i) for i, p in sorted(groups)]
    if users or groups or group_obj is not None:
        entries.append((TAG_MASK, mask if mask is not None else (mode >> 3) & 7, 0xFFFFFFFF))
    entries.append((TAG_OTHER, mode & 7, 0xFFFFFFFF))
    return struct.pack("<I", ACL_VERSION) + b"".join(_ENTRY.pack(*x) for x in entries)


def build_default_acl(objs: tuple[int, int, int, int], users: list[tuple[int, int]],
                      groups: list[tuple[int, int]]) -> bytes:
    uo, go, other, mask = objs
    entries = [(TAG_USER_OBJ, uo & 7, 0xFFFFFFFF)]
    entries += [(TAG_USER, p, i) for i, p in sorted(users)]
    entries.append((TAG_GROUP_OBJ, go & 7, 0xFFFFFFFF))
    entries += [(TAG_GROUP, p, i) for i, p in sorted(groups)]
    if mask != UNDEFINED:
        entries.append((TAG_MASK, mask & 7, 0xFFFFFFFF))
    entries.append((TAG_OTHER, other & 7, 0xFFFFFFFF))
    return struct.pack("<I", ACL_VERSION) + b"".join(_ENTRY.pack(*x) for x in entries)
