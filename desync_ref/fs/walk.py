"""Read a directory tree the way casync's encoder does and feed it to a CatarWriter.

Spec: ``spec/catar.md`` § "Feature flags" and § "Reading a tree". What is read per node
and how the flags shape it follows casync ``src/caencoder.c``
(``ca_encoder_get_entry_data``, ``ca_encoder_node_read_*``, ``ca_encoder_fixup_mode``,
``ca_encoder_fixup_mtime``, ``ca_encoder_shall_store_child_node``, ``uid_to_name``);
``.caexclude`` files as in § "Exclusion files" (``fs/exclude.py``).
Memory: one directory listing per open level, and file payloads in fixed-size blocks.
A file with holes is read by its data regions, its holes emitted as zeros from memory
(``fs/holes.py``; spec/catar.md § "Files with holes").
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import stat
import struct
from dataclasses import dataclass
from typing import Final

from desync_ref.errors import DesyncRefError, InvalidFormat, UnsupportedEntry
from desync_ref.formats import constants as c
from desync_ref.formats.catar import CatarWriter, Entry
from desync_ref.formats.flag_rules import (
    chattr_to_flags,
    fixup_mode,
    fixup_mtime,
    type_allowed,
    xattr_name_stored,
)
from desync_ref.fs import exclude
from desync_ref.fs.acl import read_acls
from desync_ref.fs.holes import data_regions, has_holes

FS_IOC_GETFLAGS: Final = 0x80086601
FS_IOC_FSGETXATTR: Final = 0x801C581F
FS_NODUMP_FL: Final = 0x40
READ_BLOCK: Final = 1024 * 1024
_ZEROS: Final = bytes(READ_BLOCK)
MAX_DEPTH: Final = 400
_UNSUPPORTED: Final = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL)


def _ioctl_u32(fd: int, request: int, size: int, at: int) -> int:
    try:
        buf = fcntl.ioctl(fd, request, bytes(size))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return 0
        raise
    value: int = struct.unpack_from("<I", buf, at)[0]
    return value


def read_chattr(fd: int) -> int:
    return _ioctl_u32(fd, FS_IOC_GETFLAGS, 8, 0)


@dataclass
class _Names:
    """The encoder's one-entry cache of the last user and group name (uid_to_name)."""

    flags: int

    def user(self, uid: int) -> bytes | None:
        return self._name(uid, lambda: pwd.getpwuid(uid).pw_name)

    def group(self, gid: int) -> bytes | None:
        return self._name(gid, lambda: grp.getgrgid(gid).gr_name)

    def _name(self, ident: int, lookup: object) -> bytes | None:
        if ident == 0:
            return None
        try:
            name: str = lookup()  # type: ignore[operator]
        except KeyError:
            return None if self.flags & c.CA_FORMAT_WITH_UIDS else str(ident).encode()
        return os.fsencode(name)


class TreeEncoder:
    """Encodes the tree below a directory with casync's rules for ``flags``."""

    def __init__(self, writer: CatarWriter, flags: int, *, no_time: bool = False) -> None:
        self.w = writer
        self.flags = flags
        self.no_time = no_time
        self.names = _Names(flags)
        # The exclusion rules the child directory about to be encoded inherits, and the
        # path to it (for messages).
        self._inherited: exclude.Rules = ()
        self._path: list[bytes] = []

    def encode(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            self._node(fd, st, -1, b"", 0)
        finally:
            os.close(fd)

    def _entry(self, fd: int | None, st: os.stat_result, parent: int, name: bytes) -> Entry:
        flags, mode = self.flags, st.st_mode
        if not type_allowed(flags, mode):
            raise UnsupportedEntry(f"{os.fsdecode(name) or '.'}: node type not allowed by the flags")
        mtime = 0 if self.no_time else fixup_mtime(flags, st.st_mtime_ns)
        e = Entry(flags, fixup_mode(flags, mode), mtime=mtime)
        if flags & c.CA_FORMAT_WITH_UIDS:
            if flags & c.CA_FORMAT_WITH_16BIT_UIDS and (st.st_uid > 0xFFFF or st.st_gid > 0xFFFF):
                raise UnsupportedEntry(f"{os.fsdecode(name)}: uid/gid does not fit 16 bits")
            e.uid, e.gid = st.st_uid, st.st_gid
        if flags & c.CA_FORMAT_WITH_USER_NAMES:
            e.user, e.group = self.names.user(st.st_uid), self.names.group(st.st_gid)
        regular_or_dir = fd is not None
        if regular_or_dir and flags & c.CA_FORMAT_WITH_CHATTR:
            assert fd is not None
            e.flags |= chattr_to_flags(read_chattr(fd)) & flags
        if flags & c.CA_FORMAT_WITH_SELINUX:
            e.selinux = self._selinux(fd, parent, name)
        if regular_or_dir and flags & (c.CA_FORMAT_WITH_XATTRS | c.CA_FORMAT_WITH_FCAPS):
            assert fd is not None
            self._xattrs(fd, e, stat.S_ISREG(mode))
        if flags & c.CA_FORMAT_WITH_ACL and not stat.S_ISLNK(mode):
            read_acls(fd if fd is not None else None, parent, name, e, self.names)
        if regular_or_dir and flags & c.CA_FORMAT_WITH_QUOTA_PROJID:
            assert fd is not None
            e.quota_projid = _ioctl_u32(fd, FS_IOC_FSGETXATTR, 28, 12)
        if stat.S_ISREG(mode):
            e.size = st.st_size
        elif stat.S_ISLNK(mode):
            e.target = os.readlink(name, dir_fd=parent)
        elif stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            e.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        return e

    def _selinux(self, fd: int | None, parent: int, name: bytes) -> bytes | None:
        try:
            if fd is not None:
                raw = os.getxattr(fd, "security.selinux")
            else:
                raw = os.getxattr(f"/proc/self/fd/{parent}/".encode() + name, "security.selinux",
                                  follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                return None
            raise
        return raw.split(b"\0", 1)[0]

    def _xattrs(self, fd: int, e: Entry, regular: bool) -> None:
        try:
            names = [os.fsencode(n) for n in os.listxattr(fd)]
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EBADF):
                return
            raise
        for name in sorted(names):
            is_fcaps = regular and name == b"security.capability"
            if not (xattr_name_stored(name) or is_fcaps):
                continue
            try:
                value = os.getxattr(fd, name)
            except OSError as exc:
                if exc.errno == errno.ENODATA:
                    continue
                raise
            if is_fcaps:
                if self.flags & c.CA_FORMAT_WITH_FCAPS:
                    e.fcaps = value
            elif self.flags & c.CA_FORMAT_WITH_XATTRS:
                e.xattrs.append((name, value))

    def _node(self, fd: int | None, st: os.stat_result, parent: int, name: bytes,
              depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DesyncRefError(f"directory tree is nested more than {MAX_DEPTH} levels")
        e = self._entry(fd, st, parent, name)
        self.w.entry(e)
        if stat.S_ISREG(st.st_mode):
            assert fd is not None
            self._payload(fd, e.size, name)
        elif stat.S_ISDIR(st.st_mode):
            assert fd is not None
            self._children(fd, depth)
            self.w.end_dir()

    def _payload(self, fd: int, size: int, name: bytes) -> None:
        if has_holes(fd, size):
            self._sparse_payload(fd, size, name)
            return
        left = size
        while left:
            block = os.read(fd, min(READ_BLOCK, left))
            if not block:
                raise DesyncRefError(f"{os.fsdecode(name)}: file shrank while being read")
            self.w.payload(block)
            left -= len(block)

    def _sparse_payload(self, fd: int, size: int, name: bytes) -> None:
        """The payload of a file with holes: its data regions are read, its holes are
        zeros from memory (the catar has no holes: the bytes are the same)."""
        offset = 0
        for start, length in [*data_regions(fd, 0, size), (size, 0)]:
            while offset < start:
                count = min(READ_BLOCK, start - offset)
                self.w.payload(_ZEROS if count == READ_BLOCK else _ZEROS[:count])
                offset += count
            while offset < start + length:
                block = os.pread(fd, min(READ_BLOCK, start + length - offset), offset)
                if not block:
                    raise DesyncRefError(f"{os.fsdecode(name)}: file shrank while being read")
                self.w.payload(block)
                offset += len(block)
        if os.fstat(fd).st_size < size:
            raise DesyncRefError(f"{os.fsdecode(name)}: file shrank while being read")

    def _children(self, fd: int, depth: int) -> None:
        names = sorted(os.fsencode(n) for n in os.listdir(fd))
        dev = os.fstat(fd).st_dev
        rules = _DirectoryRules(fd, self._inherited, exclude.EXCLUDE_FILE_NAME in names,
                                self.flags & c.CA_FORMAT_EXCLUDE_FILE != 0, self._path)
        self._inherited = ()
        for name in names:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            child_fd = None
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                open_flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW
                if stat.S_ISDIR(st.st_mode):
                    open_flags |= os.O_DIRECTORY
                child_fd = os.open(name, open_flags, dir_fd=fd)
            try:
                if child_fd is not None:
                    st = os.fstat(child_fd)
                if not self._keep(child_fd, st, dev):
                    continue
                excluded, self._inherited = rules.test(name, stat.S_ISDIR(st.st_mode))
                if excluded:
                    continue
                self.w.begin_child(name)
                self._path.append(name)
                self._node(child_fd, st, fd, name, depth + 1)
                self._path.pop()
                self.w.end_child()
            finally:
                if child_fd is not None:
                    os.close(child_fd)

    def _keep(self, fd: int | None, st: os.stat_result, parent_dev: int) -> bool:
        """ca_encoder_shall_store_child_node: node types, the nodump flag, submounts."""
        if not type_allowed(self.flags, st.st_mode):
            return False
        if self.flags & c.CA_FORMAT_EXCLUDE_SUBMOUNTS and st.st_dev != parent_dev:
            return False
        if fd is not None and self.flags & c.CA_FORMAT_EXCLUDE_NODUMP:
            return not read_chattr(fd) & FS_NODUMP_FL
        return True


class _DirectoryRules:
    """One directory's exclusion rules: inherited ones plus its own ``.caexclude``, read
    when the first child that passed the other checks is tested, as casync reads it
    (``ca_encoder_node_load_exclude_file``)."""

    def __init__(self, fd: int, inherited: exclude.Rules, has_file: bool, enabled: bool,
                 path: list[bytes]) -> None:
        self.fd, self.rules, self.enabled = fd, inherited, enabled
        self.unread = enabled and has_file
        self.path = path

    def test(self, name: bytes, is_directory: bool) -> tuple[bool, exclude.Rules]:
        if not self.enabled:
            return False, ()
        if self.unread:
            self.unread = False
            try:
                self.rules += exclude.read_rules(self.fd)
            except InvalidFormat as exc:  # a .caexclude casync refuses too
                where = os.fsdecode(os.path.join(*self.path, exclude.EXCLUDE_FILE_NAME))
                raise InvalidFormat(f"{where}: {exc}") from None
        if not self.rules:
            return False, ()
        return exclude.test(self.rules, name, is_directory)
