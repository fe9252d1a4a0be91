"""catar bytes written and searched by the tests themselves, independent of desync_ref.

Record types, feature bits and the GOODBYE hash key are casync's ``src/caformat.h``; the
layouts are spec/catar.md § "Records" and § "GOODBYE". Used to hand-build archives with
records this file system cannot produce, and to see which records an archive holds.
"""

from __future__ import annotations

import struct

# src/caformat.h, enum CA_FORMAT_*
ENTRY = 0x1396FABCEA5BBB51
XATTR = 0xB8157091F80BC486
ACL_USER = 0x297DC88B2EF12FAF
ACL_DEFAULT = 0xFE3EEDA6823C8CD0
FCAPS = 0xF7267DB0AFED0629
QUOTA_PROJID = 0x161BAF2D8772A72B
SELINUX = 0x46FAF0602FD26C59
SYMLINK = 0x664A6FB6830E0D6C
PAYLOAD = 0x8B9E1D93D6DCFFC9
FILENAME = 0x6DBB6EBCB3161F0B
GOODBYE = 0xDFD35C5E8327C403
GOODBYE_TAIL_MARKER = 0x57446FA533702943
# feature bits (caformat.h, CA_FORMAT_WITH_*)
WITH_32BIT_UIDS = 0x2
WITH_NSEC_TIME = 0x20
WITH_PERMISSIONS = 0x100
WITH_SYMLINKS = 0x200
WITH_FLAG_NOATIME = 0x20000
WITH_SELINUX = 0x40000000
WITH_QUOTA_PROJID = 0x100000000
# CA_FORMAT_GOODBYE_HASH_KEY, as two little-endian words
HASH_KEY = (0x8574442B0F1D84B3, 0x2736ED30D1C22EC1)

MASK = (1 << 64) - 1


def record(kind: int, body: bytes) -> bytes:
    return struct.pack("<2Q", 16 + len(body), kind) + body


def entry(flags: int, mode: int, *, uid: int = 0, gid: int = 0, mtime: int = 0,
          chattr: int = 0) -> bytes:
    return record(ENTRY, struct.pack("<6Q", flags, mode, chattr, uid, gid, mtime))


def siphash24(data: bytes, k0: int = HASH_KEY[0], k1: int = HASH_KEY[1]) -> int:
    """SipHash-2-4 (Aumasson & Bernstein), 64-bit output."""
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & MASK

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & MASK
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & MASK
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & MASK
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    tail = len(data) % 8
    for i in range(0, len(data) - tail, 8):
        (m,) = struct.unpack_from("<Q", data, i)
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[len(data) - tail:], "little")
    v[3] ^= last
    rounds(2)
    v[0] ^= last
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def directory(dir_entry: bytes, name: bytes, child: bytes) -> bytes:
    """A directory with one child: ENTRY..., FILENAME, the child's bytes, GOODBYE. With
    one item the table is that item, then the tail (spec/catar.md § "GOODBYE")."""
    filename = record(FILENAME, name + b"\0")
    goodbye_at = len(dir_entry) + len(filename) + len(child)
    size = 16 + 24 * 2
    items = struct.pack("<3Q", goodbye_at - len(dir_entry), len(filename) + len(child),
                        siphash24(name))
    tail = struct.pack("<3Q", goodbye_at, size, GOODBYE_TAIL_MARKER)
    return dir_entry + filename + child + record(GOODBYE, items + tail)


def holds(archive: bytes, kind: int) -> bool:
    """The archive has a record of this type (8 random-looking bytes: a payload holding
    them by chance is not a worry for the trees the tests build)."""
    return struct.pack("<Q", kind) in archive


def entry_chattr_flags(archive: bytes) -> list[int]:
    """The ``flags`` field of every ENTRY record found in the archive."""
    head = struct.pack("<2Q", 64, ENTRY)
    found, at = [], archive.find(head)
    while at >= 0:
        found.append(struct.unpack_from("<Q", archive, at + 32)[0])
        at = archive.find(head, at + 1)
    return found
