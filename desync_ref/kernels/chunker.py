"""casync's buzhash chunker as a kernel: bytes and integers in, cut offsets out.

Spec: ``spec/chunker.md``. The table and formulas are casync's ``src/cachunker.c``
(``buzhash_table``, ``ca_chunker_start``, ``ca_chunker_roll``, ``shall_break``,
``ca_chunker_scan``). This module holds no state and does no I/O so mypyc can compile it;
the driver in ``desync_ref.chunking`` feeds it buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mypy_extensions import i64

if TYPE_CHECKING:
    from librt.strings import read_i64_le
    from librt.vecs import vec

WINDOW_SIZE: Final = 48  # CA_CHUNKER_WINDOW_SIZE (cachunker.h)

# buzhash_table from casync src/cachunker.c; its SHA-256 (little-endian u32s) is pinned
# in spec/chunker.md and checked by the tests.
BUZHASH_TABLE: Final[tuple[int, ...]] = (
    0x458BE752, 0xC10748CC, 0xFBBCDBB8, 0x6DED5B68, 0xB10A82B5, 0x20D75648, 0xDFC5665F, 0xA8428801,
    0x7EBF5191, 0x841135C7, 0x65CC53B3, 0x280A597C, 0x16F60255, 0xC78CBC3E, 0x294415F5, 0xB938D494,
    0xEC85C4E6, 0xB7D33EDC, 0xE549B544, 0xFDEDA5AA, 0x882BF287, 0x3116737C, 0x05569956, 0xE8CC1F68,
    0x0806AC5E, 0x22A14443, 0x15297E10, 0x50D090E7, 0x4BA60F6F, 0xEFD9F1A7, 0x5C5C885C, 0x82482F93,
    0x9BFD7C64, 0x0B3E7276, 0xF2688E77, 0x8FAD8ABC, 0xB0509568, 0xF1ADA29F, 0xA53EFDFE, 0xCB2B1D00,
    0xF2A9E986, 0x6463432B, 0x95094051, 0x5A223AD2, 0x9BE8401B, 0x61E579CB, 0x1A556A14, 0x5840FDC2,
    0x9261DDF6, 0xCDE002BB, 0x52432BB0, 0xBF17373E, 0x7B7C222F, 0x2955ED16, 0x9F10CA59, 0xE840C4C9,
    0xCCABD806, 0x14543F34, 0x1462417A, 0x0D4A1F9C, 0x087ED925, 0xD7F8F24C, 0x7338C425, 0xCF86C8F5,
    0xB19165CD, 0x9891C393, 0x325384AC, 0x0308459D, 0x86141D7E, 0xC922116A, 0xE2FFA6B6, 0x53F52AED,
    0x2CD86197, 0xF5B9F498, 0xBF319C8F, 0xE0411FAE, 0x977EB18C, 0xD8770976, 0x9833466A, 0xC674DF7F,
    0x8C297D45, 0x8CA48D26, 0xC49ED8E2, 0x7344F874, 0x556F79C7, 0x6B25EAED, 0xA03E2B42, 0xF68F66A4,
    0x8E8B09A2, 0xF2E0E62A, 0x0D3A9806, 0x9729E493, 0x8C72B0FC, 0x160B94F6, 0x450E4D3D, 0x7A320E85,
    0xBEF8F0E1, 0x21D73653, 0x4E3D977A, 0x1E7B3929, 0x1CC6C719, 0xBE478D53, 0x8D752809, 0xE6D8C2C6,
    0x275F0892, 0xC8ACC273, 0x4CC21580, 0xECC4A617, 0xF5F7BE70, 0xE795248A, 0x375A2FE9, 0x425570B6,
    0x8898DCF8, 0xDC2D97C4, 0x0106114B, 0x364DC22F, 0x1E0CAD1F, 0xBE63803C, 0x5F69FAC2, 0x4D5AFA6F,
    0x1BC0DFB5, 0xFB273589, 0x0EA47F7B, 0x3C1C2B50, 0x21B2A932, 0x6B1223FD, 0x2FE706A8, 0xF9BD6CE2,
    0xA268E64E, 0xE987F486, 0x3EACF563, 0x1CA2018C, 0x65E18228, 0x2207360A, 0x57CF1715, 0x34C37D2B,
    0x1F8F3CDE, 0x93B657CF, 0x31A019FD, 0xE69EB729, 0x8BCA7B9B, 0x4C9D5BED, 0x277EBEAF, 0xE0D8F8AE,
    0xD150821C, 0x31381871, 0xAFC3F1B0, 0x927DB328, 0xE95EFFAC, 0x305A47BD, 0x426BA35B, 0x1233AF3F,
    0x686A5B83, 0x50E072E5, 0xD9D3BB2A, 0x8BEFC475, 0x487F0DE6, 0xC88DFF89, 0xBD664D5E, 0x971B5D18,
    0x63B14847, 0xD7D3C1CE, 0x7F583CF3, 0x72CBCB09, 0xC0D0A81C, 0x7FA3429B, 0xE9158A1B, 0x225EA19A,
    0xD8CA9EA3, 0xC763B282, 0xBB0C6341, 0x020B8293, 0xD4CD299D, 0x58CFA7F8, 0x91B4EE53, 0x37E4D140,
    0x95EC764C, 0x30F76B06, 0x5EE68D24, 0x679C8661, 0xA41979C2, 0xF2B61284, 0x4FAC1475, 0x0ADB49F9,
    0x19727A23, 0x15A7E374, 0xC43A18D5, 0x3FB1AA73, 0x342FC615, 0x924C0793, 0xBEE2D7F0, 0x8A279DE9,
    0x4AA2D70C, 0xE24DD37F, 0xBE862C0B, 0x177C22C2, 0x5388E5EE, 0xCD8A7510, 0xF901B4FD, 0xDBC13DBC,
    0x6C0BAE5B, 0x64EFE8C7, 0x48B02079, 0x80331A49, 0xCA3D8AE6, 0xF3546190, 0xFED7108B, 0xC49B941B,
    0x32BAF4A9, 0xEB833A4A, 0x88A3F1A5, 0x3A91CE0A, 0x3CC27DA1, 0x7112E684, 0x4A3096B1, 0x3794574C,
    0xA3C8B6F3, 0x1D213941, 0x6E0A2E00, 0x233479F1, 0x0F4CD82F, 0x6093EDD2, 0x5D7D209E, 0x464FE319,
    0xD4DCAC9E, 0x0DB845CB, 0xFB5E4BC3, 0xE0256CE1, 0x09FB4ED1, 0x0914BE1E, 0xA5BDB2C3, 0xC6EB57BB,
    0x30320350, 0x3F397E91, 0xA67791BC, 0x86BC0E2C, 0xEFA0A7E2, 0xE9FF7543, 0xE733612C, 0xD185897B,
    0x329E5388, 0x91DD236B, 0x2ECB0D93, 0xF4D82A3D, 0x35B5C03F, 0xE4E606F0, 0x05B21843, 0x37B45964,
    0x5EFF22F4, 0x6027F4CC, 0x77178B3C, 0xAE507131, 0x7BF7CABC, 0xF9C18D66, 0x593ADE65, 0xD95DDF11,
)

_MASK32: Final = 0xFFFFFFFF


def _rol32(value: i64, shift: i64) -> i64:
    shift &= 31
    if shift == 0:
        return value
    return ((value << shift) | (value >> (32 - shift))) & _MASK32


def _dup32(value: i64) -> i64:
    """``value`` (32 bits) in both halves of a 64-bit word, as the signed i64 it reads as."""
    doubled: int = value | (value << 32)
    return doubled - (1 << 64) if doubled >= 1 << 63 else doubled


# The byte leaving the window is rotated by the window size (48 ≡ 16 mod 32) on every
# roll; precomputing that rotation keeps the inner loop to two lookups. Compiled, the
# tables are native i64 vectors (librt), which mypyc indexes without boxing; interpreted,
# plain tuples, so the pure backend needs nothing beyond the standard library.
# Compiled, the scan also reads eight input bytes per bounds check with librt's
# ``read_i64_le`` (one unaligned load in C, where ``data[i]`` costs a sign fix-up and a
# range check per byte); interpreted, word reads and shifts cost more than byte indexing,
# so the pure module takes the byte loop and never looks ``read_i64_le`` up.
# ``_ENTER2``/``_LEAVE2`` hold each entry twice (both 32-bit halves) for the compiled word
# loop of ``_scan_odd``; the pure module never reads them.
if __file__.endswith(".py"):
    _ENTER: vec[i64] = BUZHASH_TABLE  # type: ignore[assignment]
    _LEAVE: vec[i64] = tuple(_rol32(v, WINDOW_SIZE) for v in BUZHASH_TABLE)  # type: ignore[assignment]
    _ENTER2: vec[i64] = ()  # type: ignore[assignment]
    _LEAVE2: vec[i64] = ()  # type: ignore[assignment]
    _WORDS = False
else:  # pragma: no cover - only in the mypyc build
    _WORDS = True
    from librt.strings import read_i64_le
    from librt.vecs import vec

    _ENTER = vec[i64](BUZHASH_TABLE)
    _LEAVE = vec[i64]([_rol32(v, WINDOW_SIZE) for v in BUZHASH_TABLE])
    _ENTER2 = vec[i64]([_dup32(v) for v in BUZHASH_TABLE])
    _LEAVE2 = vec[i64]([_dup32(_rol32(v, WINDOW_SIZE)) for v in BUZHASH_TABLE])


def buzhash(data: bytes, start: i64, length: i64) -> i64:
    """``ca_chunker_start``: hash of ``data[start:start+length]`` from scratch.

    casync XORs each byte's table entry rotated by its distance from the window's end;
    rotating the running hash by one before each byte (Horner's scheme) gives the same
    value without a rotate by a variable amount."""
    h: i64 = 0
    table = _ENTER
    i: i64 = start
    end: i64 = start + length
    while i < end:
        h = (((h << 1) | (h >> 31)) & _MASK32) ^ table[data[i]]
        i += 1
    return h


def buzhash_roll(h: i64, leave: i64, enter: i64) -> i64:
    """``ca_chunker_roll`` for a full 48-byte window."""
    return (((h << 1) | (h >> 31)) & _MASK32) ^ _LEAVE[leave] ^ _ENTER[enter]


def find_cut(data: bytes, pos: i64, end: i64, min_size: i64, max_size: i64, discriminator: i64) -> i64:
    """End offset of the chunk that starts at ``pos``, or -1 if ``data[pos:end]`` holds none.

    casync tests its first window once ``max(min_size, 48)`` bytes are in the chunk (it
    skips the first ``min_size - 48`` bytes and then fills the window), so a cut at exactly
    ``min_size`` is possible; after that every further byte is tested, and ``max_size``
    forces a cut. The caller passes at least ``max_size`` bytes past ``pos`` unless the
    input ends sooner; -1 at end of input means the rest is the last chunk.

    The cut test ``h % d == d - 1`` is done as "``h + 1`` is a multiple of ``d``", with
    ``d = 2**k * m`` for odd ``m``: the low ``k`` bits must be zero and the rest times the
    inverse of ``m`` modulo 2**32 must not exceed ``(2**32 - 1) // m`` (the trick desync's
    chunker.go uses). It avoids a division per byte, which compiled code pays dearly for.
    The first window is tested here with ``%``; the rolling scan is ``_scan_odd`` (``k == 0``,
    casync's usual case: one multiply-compare per byte) or ``_scan_even``.
    """
    length: i64 = WINDOW_SIZE
    if min_size > length:  # a statement, not a conditional expression, which mypyc boxes
        length = min_size
    i: i64 = pos + length
    if i > end:
        return -1
    h: i64 = buzhash(data, i - WINDOW_SIZE, WINDOW_SIZE)
    if length >= max_size or h % discriminator == discriminator - 1:
        return i
    stop: i64 = pos + max_size
    if stop > end:
        stop = end
    if discriminator & 1:
        i = _scan_odd(data, h, i, stop, discriminator)
    else:
        i = _scan_even(data, h, i, stop, discriminator)
    if i >= 0:
        return i
    if stop == pos + max_size:
        return stop
    return -1


def _inverse32(odd: i64) -> i64:
    """The inverse of ``odd`` modulo 2**32 (Newton's iteration doubles the correct bits)."""
    inverse: i64 = odd
    for _ in range(5):
        inverse = (inverse * (2 - odd * inverse)) & _MASK32
    return inverse


def _scan_odd(data: bytes, h: i64, i: i64, stop: i64, discriminator: i64) -> i64:
    """Roll from ``i`` to ``stop``; the offset after the first byte whose hash ``h`` has
    ``h % d == d - 1``, else -1. ``d`` is odd (casync's usual case).

    The per-byte work is two table loads, a rotate, two xors and one multiply-compare:
    ``x = h + 1`` is a multiple of odd ``d`` iff ``x * inverse(d) mod 2**32 <= (2**32 - 1) // d``.
    The one value that test misreads, ``x == 2**32`` (which wraps to 0; 2**32 is a
    multiple of an odd ``d`` only for ``d == 1``), is checked only after a hit. The bytes
    leaving and entering the window are read eight at a time as little-endian words when
    compiled; the pure module takes the byte loop, which is faster interpreted (so the
    compiled-versus-pure tests also compare the two loops).

    The compiled word loop keeps the 32-bit hash twice, in both halves of a 64-bit word
    (the tables ``_ENTER2``/``_LEAVE2`` likewise). A 32-bit rotate of ``h`` is then a plain
    64-bit rotate, which ``(h << 1) | ((h >> 63) & 1)`` compiles to (one ``rol``), and
    no ``& 0xFFFFFFFF`` is needed per byte: the low 32 bits of ``(h + 1) * inverse`` only
    depend on the low 32 bits of ``h``. That shortens the chain each byte waits for from
    shift, or, xor, mask to rotate, xor; the byte loop (the tail, and the pure module)
    keeps the plain 32-bit form.
    """
    inverse: i64 = _inverse32(discriminator)
    quotient_max: i64 = _MASK32 // discriminator
    leave = _LEAVE
    enter = _ENTER
    if _WORDS:
        leave2 = _LEAVE2
        enter2 = _ENTER2
        # Never true; but with the lengths known, the C compiler proves every ``x & 255``
        # in range and drops the bounds check (and negative-index fix-up) of each lookup.
        if len(leave2) != 256 or len(enter2) != 256:
            raise RuntimeError("chunker tables must have 256 entries")
        h |= h << 32  # wraps into the sign bit in i64 arithmetic, as intended
        while i + 8 <= stop:
            old: i64 = read_i64_le(data, i - WINDOW_SIZE)
            new: i64 = read_i64_le(data, i)
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[old & 255] ^ enter2[new & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 1
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 8) & 255] ^ enter2[(new >> 8) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 2
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 16) & 255] ^ enter2[(new >> 16) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 3
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 24) & 255] ^ enter2[(new >> 24) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 4
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 32) & 255] ^ enter2[(new >> 32) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 5
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 40) & 255] ^ enter2[(new >> 40) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 6
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 48) & 255] ^ enter2[(new >> 48) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 7
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 56) & 255] ^ enter2[(new >> 56) & 255])
            if ((h + 1) * inverse) & _MASK32 <= quotient_max and ((h & _MASK32) != _MASK32 or discriminator == 1):
                return i + 8
            i += 8
        h &= _MASK32  # back to the 32-bit form for the byte loop
    while i < stop:
        h = (((h << 1) | (h >> 31)) ^ (leave[data[i - WINDOW_SIZE]] ^ enter[data[i]])) & _MASK32
        i += 1
        if ((h + 1) * inverse) & _MASK32 <= quotient_max and (h != _MASK32 or discriminator == 1):
            return i
    return -1


def _scan_even(data: bytes, h: i64, i: i64, stop: i64, discriminator: i64) -> i64:
    """``_scan_odd`` for ``d = 2**k * m`` with ``k > 0``: the low ``k`` bits of ``h + 1``
    must be zero and the rest a multiple of odd ``m``. Kept apart so the odd loop carries
    no shift or mask test. Compiled, the same word loop with the doubled hash as
    ``_scan_odd``'s; ``x & 0xFFFFFFFF`` before the shift keeps the upper copy out of the
    quotient, and the low-bits test, which most bytes fail, comes first."""
    shift: i64 = 0
    odd: i64 = discriminator
    while odd & 1 == 0:
        odd >>= 1
        shift += 1
    low_bits: i64 = (1 << shift) - 1
    inverse: i64 = _inverse32(odd)
    quotient_max: i64 = _MASK32 // odd
    leave = _LEAVE
    enter = _ENTER
    x: i64
    if _WORDS:
        leave2 = _LEAVE2
        enter2 = _ENTER2
        if len(leave2) != 256 or len(enter2) != 256:  # see _scan_odd
            raise RuntimeError("chunker tables must have 256 entries")
        h |= h << 32
        while i + 8 <= stop:
            old: i64 = read_i64_le(data, i - WINDOW_SIZE)
            new: i64 = read_i64_le(data, i)
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[old & 255] ^ enter2[new & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 1
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 8) & 255] ^ enter2[(new >> 8) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 2
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 16) & 255] ^ enter2[(new >> 16) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 3
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 24) & 255] ^ enter2[(new >> 24) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 4
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 32) & 255] ^ enter2[(new >> 32) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 5
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 40) & 255] ^ enter2[(new >> 40) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 6
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 48) & 255] ^ enter2[(new >> 48) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 7
            h = ((h << 1) | ((h >> 63) & 1)) ^ (leave2[(old >> 56) & 255] ^ enter2[(new >> 56) & 255])
            x = h + 1
            if (x & low_bits == 0 and (((x & _MASK32) >> shift) * inverse) & _MASK32 <= quotient_max
                    and (odd == 1 or (h & _MASK32) != _MASK32)):
                return i + 8
            i += 8
        h &= _MASK32
    while i < stop:
        h = (((h << 1) | (h >> 31)) & _MASK32) ^ leave[data[i - WINDOW_SIZE]] ^ enter[data[i]]
        i += 1
        x = h + 1
        # x == 2**32 (h all ones) is a multiple of d only for d = 2**k, where odd == 1.
        if (x & low_bits == 0 and ((x >> shift) * inverse) & _MASK32 <= quotient_max
                and (odd == 1 or x != 0x100000000)):
            return i
    return -1
