"""The chunker kernel, both backends, against casync's rule written out plainly here.

The compiled ``_scan_odd`` keeps the hash in both halves of a 64-bit word with tables of
doubled entries (kernels/chunker.py); the pure module never runs that loop, so comparing
the two backends alone would not say which one is right. The reference below follows
casync ``src/cachunker.c`` literally: the window's hash from its definition (each entry
rotated by its distance from the window's end), rolled with ``ca_chunker_roll`` and tested
with ``%`` on every byte.
"""

from __future__ import annotations

import random
from types import ModuleType

import pytest

from desync_ref import kernels
from desync_ref.chunking import ChunkSizes
from desync_ref.kernels.chunker import BUZHASH_TABLE, WINDOW_SIZE


def _rol32(value: int, shift: int) -> int:
    shift %= 32
    return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF if shift else value


def _window_hash(data: bytes, end: int) -> int:
    h = 0
    for k, byte in enumerate(data[end - WINDOW_SIZE:end]):
        h ^= _rol32(BUZHASH_TABLE[byte], WINDOW_SIZE - 1 - k)
    return h


def _reference_cuts(data: bytes, sizes: ChunkSizes) -> list[int]:
    """Every chunk end of ``data``, casync's way (the last chunk ends at the input's end)."""
    lo, hi, d = sizes.min, sizes.max, sizes.discriminator
    cuts, pos = [], 0
    while pos < len(data):
        i = pos + max(lo, WINDOW_SIZE)
        if i > len(data):
            break
        h = _window_hash(data, i)
        while not (i - pos >= hi or h % d == d - 1) and i < len(data):
            leave, enter = data[i - WINDOW_SIZE], data[i]
            h = _rol32(h, 1) ^ _rol32(BUZHASH_TABLE[leave], WINDOW_SIZE) ^ BUZHASH_TABLE[enter]
            i += 1
        if not (i - pos >= hi or h % d == d - 1):
            break
        cuts.append(i)
        pos = i
    if pos < len(data):
        cuts.append(len(data))
    return cuts


def _kernel_cuts(module: ModuleType, data: bytes, sizes: ChunkSizes) -> list[int]:
    cuts, pos = [], 0
    while pos < len(data):
        cut = module.find_cut(data, pos, len(data), sizes.min, sizes.max, sizes.discriminator)
        pos = len(data) if cut < 0 else cut
        cuts.append(pos)
    return cuts


def _backends() -> list[ModuleType]:
    found = [kernels.load_pure("chunker")]
    compiled = kernels.load_compiled("chunker")
    if compiled is not None:
        found.append(compiled)
    return found


# Odd discriminators (the word loop of _scan_odd when compiled) and even ones (_scan_even).
SIZES = [ChunkSizes(256, 1203, 4096), ChunkSizes(64, 300, 2000), ChunkSizes(16, 500, 9000),
         ChunkSizes(256, 1024, 4096), ChunkSizes(1000, 3000, 9000)]


@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_cuts_follow_casyncs_rule_on_every_byte_value(sizes: ChunkSizes, seed: int) -> None:
    rng = random.Random(seed)
    # random bytes (every table entry used, in every lane of the eight-byte step), then
    # runs and a short repeating pattern, ending at a length that is no multiple of 8
    data = (rng.randbytes(40000) + bytes(5000) + b"\xff" * 3000 + rng.randbytes(7) * 900
            + rng.randbytes(rng.randrange(1, 8)))
    expected = _reference_cuts(data, sizes)
    assert len(expected) > 8
    for module in _backends():
        assert _kernel_cuts(module, data, sizes) == expected, module.__name__


def test_sizes_cover_both_scans() -> None:
    assert {size.discriminator & 1 for size in SIZES} == {0, 1}
