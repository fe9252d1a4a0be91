"""The disk sink of untar: restores nodes below TARGET and never writes outside it.

Spec: ``spec/catar.md`` § "Restoring a tree" and § "Safety". Every node is created
relative to a directory file descriptor that was itself opened with ``O_NOFOLLOW``, so
no symlink (from the archive or already in TARGET) is ever followed; names were checked
by the decoder (one component, not ``.``/``..``, no NUL). What is restored and in which
order follows casync ``src/cadecoder.c`` (owner, then mode, xattrs, ACLs, fcaps, chattr,
times). Directories' metadata is applied once the whole archive has been read (each
directory after everything below it, as desync since #378): until then every directory
this run made is an owner-writable 0700, so a refused archive can always be removed again.
Anything the OS refuses is an error naming the node's path and type. Whole file-system
blocks of zeros in a payload are left as holes unless ``punch_holes`` is off (casync's
``--punch-holes``, on by default; spec/catar.md § "Files with holes").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator

from desync_ref.errors import DesyncRefError
from desync_ref.formats import constants as c
from desync_ref.formats.catar import Entry
from desync_ref.formats.flag_rules import flags_to_chattr, time_granularity
from desync_ref.fs.acl import ACL_ACCESS, ACL_DEFAULT, build_acl, build_default_acl
from desync_ref.fs.atomic import current_umask
from desync_ref.fs.holes import write_with_holes
from desync_ref.fs.walk import read_chattr

FS_IOC_SETFLAGS = 0x40086602
DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KIND_NAMES = {stat.S_IFDIR: "directory", stat.S_IFREG: "regular file", stat.S_IFLNK: "symlink",
              stat.S_IFBLK: "block device", stat.S_IFCHR: "character device",
              stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def show_path(path: list[bytes]) -> str:
    return os.fsdecode(b"/".join(path)) if path else "."


class _Step:
    """What is being done to which node, so an OS error can say it (``with step(...)``)."""

    def __init__(self) -> None:
        self.what = ""

    @contextlib.contextmanager
    def node(self, path: list[bytes], e: Entry, what: str) -> Iterator[None]:
        self.what = what
        try:
            yield
        except (OSError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            kind = KIND_NAMES.get(stat.S_IFMT(e.mode), "node")
            raise DesyncRefError(f"{kind} {show_path(path)}: cannot {self.what}: "
                                 f"{reason}") from None


class DiskSink:
    def __init__(self, target: str, *, same_owner: bool = True, same_permissions: bool = True,
                 punch_holes: bool = True) -> None:
        os.makedirs(target, exist_ok=True)
        self.root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds: list[int] = []
        self._file: tuple[int, list[bytes], Entry] | None = None  # (fd, path, entry) being written
        self.punch_holes = punch_holes
        self._written = 0  # payload bytes of the file being written
        self._block = 0  # its file system block size
        self._pending: list[tuple[list[bytes], Entry]] = []  # directories done, metadata not set
        self._step = _Step()
        self.same_owner = same_owner and os.geteuid() == 0
        self.same_permissions = same_permissions
        self.umask = current_umask()

    # helpers
    def _parent(self) -> int:
        return self.fds[-1]

    def _clear(self, name: bytes, keep_dir: bool) -> bool:
        """Remove what is at ``name`` unless it is a directory we may reuse; True if a
        directory remains."""
        try:
            st = os.stat(name, dir_fd=self._parent(), follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise DesyncRefError(f"{os.fsdecode(name)}: a directory is in the way")
        os.unlink(name, dir_fd=self._parent())
        return False

    def _mode(self, e: Entry) -> int:
        mode = stat.S_IMODE(e.mode)
        return mode if self.same_permissions else mode & ~self.umask & 0o777

    def _meta(self, fd: int | None, parent: int, name: bytes, e: Entry) -> None:
        """Owner, mode, xattrs, ACLs, fcaps, chattr, mtime; ``fd`` None for nodes we do
        not open (symlinks, devices, fifos, sockets), addressed as ``name`` in ``parent``.
        ``self._step.what`` says which of them is being set, for the error message."""
        step = self._step
        is_link = stat.S_ISLNK(e.mode)
        if self.same_owner and e.feature_flags & (c.CA_FORMAT_WITH_UIDS | c.CA_FORMAT_WITH_USER_NAMES):
            uid, gid = entry_owner(e)
            step.what = f"set the owner to {uid}:{gid}"
            if fd is not None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        if not is_link:
            step.what = f"set the mode to 0o{self._mode(e):o}"
            if fd is not None:
                os.fchmod(fd, self._mode(e))
            else:
                os.chmod(name, self._mode(e), dir_fd=parent)
        if fd is not None:
            for xname, value in e.xattrs:
                step.what = f"set the xattr {os.fsdecode(xname)}"
                os.setxattr(fd, xname, value)
            step.what = "set the ACL"
            if e.acl_user or e.acl_group or e.acl_group_obj is not None:
                acl = build_acl(e.mode, [(a.id, a.permissions) for a in e.acl_user],
                                [(a.id, a.permissions) for a in e.acl_group], e.acl_group_obj,
                                (e.mode >> 3) & 7)
                os.setxattr(fd, ACL_ACCESS, acl)
            if e.acl_default is not None:
                os.setxattr(fd, ACL_DEFAULT, build_default_acl(
                    e.acl_default, [(a.id, a.permissions) for a in e.acl_default_user],
                    [(a.id, a.permissions) for a in e.acl_default_group]))
            if e.fcaps is not None:
                step.what = "set the file capabilities"
                os.setxattr(fd, "security.capability", e.fcaps)
            if e.selinux is not None:
                with contextlib.suppress(OSError):
                    os.setxattr(fd, "security.selinux", e.selinux + b"\0")
            if e.quota_projid:
                step.what = f"set the project id {e.quota_projid}"
                _set_projid(fd, e.quota_projid)
            if e.feature_flags & c.CA_FORMAT_WITH_CHATTR:
                step.what = "set the chattr flags"
                _set_chattr(fd, flags_to_chattr(e.flags & e.feature_flags),
                            flags_to_chattr(e.feature_flags))
        else:
            # Nodes we do not open (symlinks, devices, fifos, sockets) get their xattrs and
            # label by path without following it, as casync's lsetxattr does: the parent is
            # reached through its fd, and the name is one checked component.
            path = f"/proc/self/fd/{parent}/".encode() + name
            for xname, value in e.xattrs:
                step.what = f"set the xattr {os.fsdecode(xname)}"
                os.setxattr(path, xname, value, follow_symlinks=False)
            if e.selinux is not None:
                with contextlib.suppress(OSError):
                    os.setxattr(path, "security.selinux", e.selinux + b"\0", follow_symlinks=False)
        if time_granularity(e.feature_flags) is not None:
            step.what = "set the mtime"
            times = (e.mtime, e.mtime)
            if fd is not None:
                os.utime(fd, ns=times)
            else:
                os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)

    def _open_dir(self, path: list[bytes]) -> int:
        """The directory ``path`` below TARGET, opened component by component without
        following a symlink."""
        fd = os.dup(self.root_fd)
        try:
            for name in path:
                child = os.open(name, DIR_OPEN, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    # Sink
    def directory(self, path: list[bytes], e: Entry) -> None:
        if not path:
            self.fds.append(os.dup(self.root_fd))
            return
        name = path[-1]
        with self._step.node(path, e, "create"):
            if not self._clear(name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=self._parent())
            try:
                fd = os.open(name, DIR_OPEN, dir_fd=self._parent())
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise DesyncRefError(f"{os.fsdecode(name)}: refusing to follow a symlink") from None
                raise
        self.fds.append(fd)

    def end_directory(self, path: list[bytes], e: Entry) -> None:
        # Its metadata waits for the end of the archive (see the module docstring); entries
        # are depth first, so this list is in the order the metadata must be applied.
        os.close(self.fds.pop())
        self._pending.append((path, e))

    def begin_file(self, path: list[bytes], e: Entry) -> None:
        name = path[-1]
        with self._step.node(path, e, "create"):
            self._clear(name, keep_dir=False)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self._parent())
        self._file = (fd, path, e)
        self._written = 0
        self._block = os.fstat(fd).st_blksize if self.punch_holes else 0

    def file_data(self, data: bytes) -> None:
        assert self._file is not None
        fd, path, e = self._file
        with self._step.node(path, e, "write"):
            if self._block:
                # The file is new and grows as it is written: whole zero blocks are skipped
                # and stay holes (casync's loop_write_with_holes; end_file sets the size).
                write_with_holes(fd, data, self._written, block=self._block, fresh=True)
            else:
                _write_all(fd, data)
        self._written += len(data)

    def end_file(self) -> None:
        assert self._file is not None
        fd, path, e = self._file
        self._file = None
        try:
            if self._block:
                with self._step.node(path, e, "write"):
                    os.ftruncate(fd, self._written)  # a trailing hole was not written
            with self._step.node(path, e, "restore"):
                self._meta(fd, self._parent(), path[-1], e)
        finally:
            os.close(fd)

    def other(self, path: list[bytes], e: Entry) -> None:
        name = path[-1]
        parent = self._parent()
        kind = stat.S_IFMT(e.mode)
        with self._step.node(path, e, "create"):
            self._clear(name, keep_dir=False)
            if kind == stat.S_IFLNK:
                os.symlink(e.target or b"", name, dir_fd=parent)
            elif kind in (stat.S_IFBLK, stat.S_IFCHR):
                major, minor = e.rdev or (0, 0)
                self._step.what = f"create (device number {major}:{minor})"
                os.mknod(name, kind | 0o600, os.makedev(major, minor), dir_fd=parent)
            else:
                os.mknod(name, kind | 0o600, dir_fd=parent)
            self._meta(None, parent, name, e)

    def abort(self) -> None:
        """After a failed walk: close every descriptor; apply no pending metadata."""
        self._release()
        self._pending = []
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _release(self) -> None:
        if self._file is not None:
            os.close(self._file[0])
            self._file = None
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def close(self) -> None:
        self._release()
        pending, self._pending = self._pending, []
        try:
            for path, e in pending:
                with self._step.node(path, e, "open"):
                    fd = self._open_dir(path)
                    try:
                        self._meta(fd, fd, b".", e)
                    finally:
                        os.close(fd)
        finally:
            os.close(self.root_fd)
            self.root_fd = -1


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data``: a short write (a full disk, a file size limit) is followed by
    another, which then fails with the reason (ENOSPC, EFBIG)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:
            raise OSError(errno.EIO, "the file system took no bytes")
        view = view[written:]


def entry_owner(e: Entry) -> tuple[int, int]:
    uid, gid = e.uid, e.gid
    if not e.feature_flags & c.CA_FORMAT_WITH_UIDS:
        import grp
        import pwd
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(os.fsdecode(e.user)).pw_uid if e.user else 0
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(os.fsdecode(e.group)).gr_gid if e.group else 0
    return uid, gid


def _set_chattr(fd: int, value: int, mask: int) -> None:
    """casync's mask_attr_fd: change only the bits the archive covers."""
    try:
        old = read_chattr(fd)
        new = (old & ~mask) | value
        if new != old:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<Q", new))
    except OSError as exc:
        if value or exc.errno not in (errno.ENOTTY, errno.EOPNOTSUPP):
            raise


def _set_projid(fd: int, projid: int) -> None:
    buf = bytearray(fcntl.ioctl(fd, 0x801C581F, bytes(28)))
    struct.pack_into("<I", buf, 12, projid)
    fcntl.ioctl(fd, 0x401C5820, bytes(buf))
