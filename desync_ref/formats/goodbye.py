"""The GOODBYE record that closes a directory in a catar: SipHash-2-4 and the BST layout.

Spec: ``spec/catar.md`` § "GOODBYE". The hash key is ``CA_FORMAT_GOODBYE_HASH_KEY``
(casync ``src/caformat.h``); SipHash-2-4 is the reference algorithm (casync
``src/siphash24.c``); the array layout of the binary search tree follows casync
``src/camakebst.c`` and the sort order ``name_table_compare`` (``src/canametable.c``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from desync_ref.formats.constants import (
    CA_FORMAT_GOODBYE,
    CA_FORMAT_GOODBYE_TAIL_MARKER,
    UINT64_MAX,
)

GOODBYE_HASH_KEY: Final = bytes(
    [0xB3, 0x84, 0x1D, 0x0F, 0x2B, 0x44, 0x74, 0x85,
     0xC1, 0x2E, 0xC2, 0xD1, 0x30, 0xED, 0x36, 0x27]
)
GOODBYE_ITEM_SIZE: Final = 24  # sizeof(CaFormatGoodbyeItem) == sizeof(CaFormatGoodbyeTail)
GOODBYE_HEADER_SIZE: Final = 16

_MASK = UINT64_MAX  # SipHash works modulo 2**64
_ITEM = struct.Struct("<3Q")


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(data: bytes, key: bytes = GOODBYE_HASH_KEY) -> int:
    """SipHash-2-4 of ``data`` under a 16-byte key, as an unsigned 64-bit integer."""
    k0, k1 = struct.unpack("<2Q", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(v0: int, v1: int, v2: int, v3: int, n: int) -> tuple[int, int, int, int]:
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    length = len(data)
    whole = length - length % 8
    for (m,) in struct.iter_unpack("<Q", data[:whole]):
        v3 ^= m
        v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 2)
        v0 ^= m
    last = int.from_bytes(data[whole:], "little") | ((length & 0xFF) << 56)
    v3 ^= last
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 2)
    v0 ^= last
    v2 ^= 0xFF
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


@dataclass(frozen=True, slots=True)
class GoodbyeItem:
    """One child: ``offset`` back from the GOODBYE start to its FILENAME, ``size`` of
    FILENAME plus the child's serialization, ``hash`` of its name."""

    offset: int
    size: int
    hash: int


def make_bst(items: Sequence[GoodbyeItem]) -> list[GoodbyeItem]:
    """Permute items sorted by (hash, position) into casync's array BST (camakebst.c)."""
    ordered = sorted(items, key=lambda item: (item.hash, -item.offset))
    n = len(ordered)
    if n <= 1:
        return list(ordered)
    out: list[GoodbyeItem | None] = [None] * n

    def place(lo: int, count: int, e: int, i: int) -> None:
        if count == 0:
            return
        p = 1 << (e - 1)
        q = 1 << e
        full = p - 1 + p // 2  # a left subtree this size or more is complete
        k = (q - 2) // 2 - max(0, full - count)
        out[i] = ordered[lo + k]
        place(lo, k, e - 1, 2 * i + 1)
        place(lo + k + 1, count - k - 1, e - 1, 2 * i + 2)

    place(0, n, n.bit_length(), 0)
    return [item for item in out if item is not None]


def goodbye_size(count: int) -> int:
    return GOODBYE_HEADER_SIZE + GOODBYE_ITEM_SIZE * count + GOODBYE_ITEM_SIZE


def encode_goodbye(items: Sequence[GoodbyeItem], entry_distance: int) -> bytes:
    """The whole GOODBYE record; ``entry_distance`` is from the directory's ENTRY to here."""
    size = goodbye_size(len(items))
    parts = [struct.pack("<2Q", size, CA_FORMAT_GOODBYE)]
    parts.extend(_ITEM.pack(i.offset, i.size, i.hash) for i in make_bst(items))
    parts.append(_ITEM.pack(entry_distance, size, CA_FORMAT_GOODBYE_TAIL_MARKER))
    return b"".join(parts)


def decode_goodbye_items(body: bytes) -> tuple[list[GoodbyeItem], tuple[int, int, int]]:
    """Items and the tail (entry distance, size, marker) of a GOODBYE record's body."""
    values = [GoodbyeItem(*v) for v in _ITEM.iter_unpack(body)]
    tail = values.pop()
    return values, (tail.offset, tail.size, tail.hash)
