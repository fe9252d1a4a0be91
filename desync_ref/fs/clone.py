"""Moving a byte range from one file to another: a reflink (``FICLONERANGE``) where the file
system shares blocks and the range is block-aligned, a copy otherwise.

Spec: spec/extract.md (seeds). Follows desync's ``CloneRange``/``CanClone``
(``ioctl_linux.go``) and ``fileSeedSegment.clone`` (``fileseed.go``): only whole blocks are
cloned, the unaligned head and tail are copied. Support is found out at run time by trying:
the first refusal for a pair of file systems turns cloning off for that pair.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading

from desync_ref.fs.atomic import make_temp
from desync_ref.fs.holes import write_at

# linux/fs.h: _IOW(0x94, 13, struct file_clone_range), the struct being
# {s64 src_fd; u64 src_offset; u64 src_length; u64 dest_offset}.
FICLONERANGE = 0x4020940D
_CLONE_RANGE = struct.Struct("=qQQQ")

# Errors that mean "this file system (pair) cannot share blocks": stop trying for it.
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.ENOSYS, errno.EPERM}

DEFAULT_BLOCK_SIZE = 4096  # desync's DefaultBlockSize (seed.go)

_refused: set[tuple[int, int]] = set()
_probed: dict[tuple[int, int], bool] = {}
_lock = threading.Lock()


def block_size(fd: int) -> int:
    """The target's block size as desync takes it (``blocksizeOfFile``: ``st_blksize``)."""
    size = os.fstat(fd).st_blksize
    return size if size > 0 else DEFAULT_BLOCK_SIZE


def can_clone(dst_dir: str, src: int, block: int) -> bool:
    """Whether blocks of ``src`` can be shared into files made in ``dst_dir``: tried once
    per pair of file systems on a scratch file there (desync's ``CanClone`` probe)."""
    try:
        src_dev = os.fstat(src).st_dev
        if os.fstat(src).st_size < block:
            return False
        pair = (src_dev, os.stat(dst_dir).st_dev)
    except OSError:
        return False
    with _lock:
        known = _probed.get(pair)
    if known is not None:
        return known
    try:
        fd, name = make_temp(dst_dir, ".clone-probe.")
    except OSError:
        return False
    try:
        ok = clone_range(fd, src, 0, block, 0)
    finally:
        os.close(fd)
        os.unlink(name)
    with _lock:
        _probed[pair] = ok
    return ok


def clone_range(dst: int, src: int, src_offset: int, length: int, dst_offset: int) -> bool:
    """Share ``length`` bytes of ``src`` at ``src_offset`` into ``dst`` at ``dst_offset``.

    False (and nothing changed) where the file systems cannot: the caller then copies.
    ``length`` must be a whole number of blocks (0 would mean "to the end of the source").
    """
    if length <= 0:
        return False
    pair = (os.fstat(src).st_dev, os.fstat(dst).st_dev)
    with _lock:
        if pair in _refused:
            return False
    try:
        fcntl.ioctl(dst, FICLONERANGE, _CLONE_RANGE.pack(src, src_offset, length, dst_offset))
    except OSError as exc:
        if exc.errno in _NO_CLONE:
            with _lock:
                _refused.add(pair)
            return False
        if exc.errno == errno.EINVAL:  # this range (alignment, EOF): copy just this one
            return False
        raise
    return True


def copy_range(dst: int, src: int, src_offset: int, length: int, dst_offset: int) -> int:
    """Copy ``length`` bytes with ``copy_file_range`` (in the kernel), else pread/pwrite."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, src_offset + done, dst_offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _copy_plain(dst, src, src_offset + done, length - done, dst_offset + done)
        if n <= 0:  # the source is shorter than it should be
            raise OSError(errno.EIO, "short read while copying a range")
        done += n
    return done


def _copy_plain(dst: int, src: int, src_offset: int, length: int, dst_offset: int) -> int:
    done = 0
    while done < length:
        data = os.pread(src, min(length - done, 1 << 20), src_offset + done)
        if not data:
            break
        write_at(dst, data, dst_offset + done)
        done += len(data)
    return done


def aligned_part(src_offset: int, dst_offset: int, length: int, block: int) -> tuple[int, int]:
    """(offset into the range, length) of its whole blocks, or (0, 0) where the two ends
    are not aligned alike or no whole block fits (desync copies then)."""
    if src_offset % block != dst_offset % block:
        return 0, 0
    head = (-src_offset) % block
    blocks = (length - head) // block * block
    return (head, blocks) if blocks > 0 else (0, 0)


def clone_or_copy(dst: int, src: int, src_offset: int, length: int, dst_offset: int,
                  block: int) -> tuple[int, int]:
    """(bytes copied, bytes cloned): the aligned middle cloned if possible, the rest copied."""
    head, blocks = aligned_part(src_offset, dst_offset, length, block)
    if blocks and clone_range(dst, src, src_offset + head, blocks, dst_offset + head):
        copied = copy_range(dst, src, src_offset, head, dst_offset)
        tail = head + blocks
        copied += copy_range(dst, src, src_offset + tail, length - tail, dst_offset + tail)
        return copied, blocks
    return copy_range(dst, src, src_offset, length, dst_offset), 0
