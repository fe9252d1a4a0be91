"""What a feature-flag set keeps of a node: permission bits, time granularity, node
types, chattr bits, stored xattr names.

Spec: ``spec/catar.md`` § "Feature flags". Rules from casync ``src/caencoder.c``
(``ca_encoder_fixup_mode``, ``ca_encoder_fixup_mtime``, ``ca_encoder_shall_store_child_node``),
``src/caformat-util.c`` (``chattr_map``, time granularity) and ``src/cautil.c``
(``ca_xattr_name_store``). Shared by the directory walker (``fs/walk.py``), the tree writer
(``fs/write.py``) and the tar-stream reader (``formats/tarstream.py``).
"""

from __future__ import annotations

import stat
from typing import Final

from desync_ref.formats import constants as c
from desync_ref.formats.catar import mtime_from_u64, mtime_to_u64

# FS_*_FL bits for the chattr feature flags (caformat-util.c, chattr_map).
CHATTR_MAP: Final = (
    (c.CA_FORMAT_WITH_FLAG_APPEND, 0x20),
    (c.CA_FORMAT_WITH_FLAG_NOATIME, 0x80),
    (c.CA_FORMAT_WITH_FLAG_COMPR, 0x4),
    (c.CA_FORMAT_WITH_FLAG_NOCOW, 0x800000),
    (c.CA_FORMAT_WITH_FLAG_NODUMP, 0x40),
    (c.CA_FORMAT_WITH_FLAG_DIRSYNC, 0x10000),
    (c.CA_FORMAT_WITH_FLAG_IMMUTABLE, 0x10),
    (c.CA_FORMAT_WITH_FLAG_SYNC, 0x8),
    (c.CA_FORMAT_WITH_FLAG_NOCOMP, 0x400),
    (c.CA_FORMAT_WITH_FLAG_PROJINHERIT, 0x20000000),
)


def time_granularity(flags: int) -> int | None:
    """ns per tick of stored mtimes, None if no time is stored (caformat-util.c)."""
    for bit, ns in ((c.CA_FORMAT_WITH_NSEC_TIME, 1), (c.CA_FORMAT_WITH_USEC_TIME, 1000),
                    (c.CA_FORMAT_WITH_SEC_TIME, 10**9), (c.CA_FORMAT_WITH_2SEC_TIME, 2 * 10**9)):
        if flags & bit:
            return ns
    return None


def fixup_mode(flags: int, mode: int) -> int:
    """ca_encoder_fixup_mode: which permission bits the flag set keeps."""
    kind = stat.S_IFMT(mode)
    is_dir = stat.S_ISDIR(mode)
    if stat.S_ISLNK(mode):
        return stat.S_IFLNK | 0o777
    if flags & (c.CA_FORMAT_WITH_PERMISSIONS | c.CA_FORMAT_WITH_ACL):
        return mode & (stat.S_IFMT(mode) | 0o7777)
    if flags & c.CA_FORMAT_WITH_READ_ONLY:
        writable = mode & 0o222
        return kind | ((0o777 if is_dir else 0o666) if writable else (0o555 if is_dir else 0o444))
    return kind | (0o777 if is_dir else 0o666)


def fixup_mtime(flags: int, mtime_ns: int) -> int:
    """ca_encoder_fixup_mtime: rounded down to the granularity. casync rounds the unsigned
    value (``timespec_to_nsec`` wraps a time before 1970), so such a time is rounded as its
    two's complement is; the result is the signed time those bytes mean."""
    g = time_granularity(flags)
    if g is None:
        return 0
    return mtime_from_u64(mtime_to_u64(mtime_ns) // g * g)


def type_allowed(flags: int, mode: int) -> bool:
    if stat.S_ISLNK(mode):
        return bool(flags & c.CA_FORMAT_WITH_SYMLINKS)
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return bool(flags & c.CA_FORMAT_WITH_DEVICE_NODES)
    if stat.S_ISFIFO(mode):
        return bool(flags & c.CA_FORMAT_WITH_FIFOS)
    if stat.S_ISSOCK(mode):
        return bool(flags & c.CA_FORMAT_WITH_SOCKETS)
    return True


def chattr_to_flags(chattr: int) -> int:
    return sum(bit for bit, fl in CHATTR_MAP if chattr & fl)


def flags_to_chattr(flags: int) -> int:
    return sum(fl for bit, fl in CHATTR_MAP if flags & bit)


def xattr_name_stored(name: bytes) -> bool:
    """ca_xattr_name_store (cautil.c): only user.* and trusted.* as XATTR records."""
    return 0 < len(name) <= 255 and (name.startswith(b"user.") or name.startswith(b"trusted."))
