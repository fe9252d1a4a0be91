"""A small fixed-seed mutator for the CI pass (``tests/test_fuzz_corpus.py``): the same
mutations every run, no atheris needed. Bit flips, byte changes, boundary integers at
random offsets, insertions, deletions, truncation, duplication and splices of two seeds.
"""

from __future__ import annotations

import random
import struct

_INTERESTING = [struct.pack("<Q", v) for v in (0, 1, 0xFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
                                                   48, 64, 0x10000, 1 << 32)]
_TOKENS = [b"*", b"/", b".", b"..", b"\0", b"\xff", b"\"", b"{", b"}", b"[", b"]", b":", b"%"]


def mutate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    """One mutant of ``data`` (``other``: a second seed to splice with)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            i = min(pos, len(b) - 1)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            v = rng.choice(_INTERESTING)[: rng.choice((1, 2, 4, 8))]
            b[pos:pos + len(v)] = v
        elif op == 3:
            b[pos:pos] = rng.choice(_TOKENS) * rng.choice((1, 1, 3))
        elif op == 4:
            del b[pos:pos + rng.choice((1, 8, 64))]
        elif op == 5:
            del b[pos:]
        elif op == 6:
            n = rng.choice((8, 16, 64))
            b[pos:pos] = b[pos:pos + n]
        elif op == 7:
            cut = rng.randrange(len(other) + 1)
            b = b[:pos] + bytearray(other[cut:])
        else:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 16))))
    return bytes(b)
