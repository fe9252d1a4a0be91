"""The chunker against casync itself, on edge sizes, crafted inputs and every size set."""

from __future__ import annotations

import hashlib
import io
import random
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_ref import kernels
from desync_ref.chunking import ChunkSizes, discriminator_from_avg, iter_chunks
from desync_ref.cli.common import parse_chunk_sizes
from desync_ref.cli.usage import UsageError
from desync_ref.formats.index import parse_index
from desync_ref.kernels.chunker import BUZHASH_TABLE, WINDOW_SIZE, buzhash, buzhash_roll

SPEC = Path(__file__).resolve().parent.parent / "spec" / "chunker.md"
KIB = 1024


def boundaries(data: bytes, sizes: ChunkSizes) -> list[int]:
    return [start + len(chunk) for start, chunk in iter_chunks(io.BytesIO(data), sizes)]


def casync_boundaries(casync: str, tmp: Path, data: bytes, sizes: ChunkSizes) -> list[int]:
    blob = tmp / "blob"
    blob.write_bytes(data)
    index = tmp / "x.caibx"
    subprocess.run([casync, "make", f"--chunk-size={sizes.min}:{sizes.avg}:{sizes.max}",
                    str(index), str(blob)], check=True, capture_output=True)
    return [c.end for c in parse_index(index.read_bytes()).chunks]


def craft_cut_at_min(sizes: ChunkSizes, seed: int) -> bytes:
    """Random bytes whose first window ending at ``min`` satisfies the cut test."""
    rng = random.Random(seed)
    prefix = rng.randbytes(sizes.min - WINDOW_SIZE)
    d = sizes.discriminator
    while True:
        window = rng.randbytes(WINDOW_SIZE)
        if buzhash(window, 0, WINDOW_SIZE) % d == d - 1:
            return prefix + window + rng.randbytes(3 * sizes.max)


def test_table_checksum_matches_spec() -> None:
    digest = hashlib.sha256(struct.pack("<256I", *BUZHASH_TABLE)).hexdigest()
    assert digest == "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660"
    if SPEC.exists():
        assert digest in SPEC.read_text()


def test_roll_equals_fresh_hash() -> None:
    data = random.Random(1).randbytes(500)
    h = buzhash(data, 0, WINDOW_SIZE)
    for i in range(WINDOW_SIZE, len(data)):
        h = buzhash_roll(h, data[i - WINDOW_SIZE], data[i])
        assert h == buzhash(data, i - WINDOW_SIZE + 1, WINDOW_SIZE)


@pytest.mark.parametrize(("sizes", "expected"), [
    ((16, 64, 256), 49535), ((1, 4, 16), 3075), ((4, 16, 64), 12318), ((8, 32, 128), 24680),
])
def test_discriminator(sizes: tuple[int, int, int], expected: int) -> None:
    assert ChunkSizes(*(s * KIB for s in sizes)).discriminator == expected


def test_discriminator_is_clamped_like_casync() -> None:
    # For avg == min the formula gives ~avg/1.33 < min; casync raises it to min.
    sizes = ChunkSizes(64 * KIB, 64 * KIB, 256 * KIB)
    assert discriminator_from_avg(64 * KIB) < 64 * KIB
    assert sizes.discriminator == 64 * KIB


def test_chunk_size_parameters() -> None:
    assert parse_chunk_sizes("16:64:256") == ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)
    for bad in ("64:16:256", "1:2", "a:b:c", "16:64:32", "0:64:256"):
        with pytest.raises(UsageError):
            parse_chunk_sizes(bad)


SIZE_SETS = [ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB), ChunkSizes(1 * KIB, 4 * KIB, 16 * KIB),
             ChunkSizes(4 * KIB, 16 * KIB, 64 * KIB), ChunkSizes(2 * KIB, 8 * KIB, 32 * KIB)]


def edge_lengths(sizes: ChunkSizes) -> list[int]:
    return [0, 1, 47, 48, 49, sizes.min - 1, sizes.min, sizes.min + 1, sizes.max - 1, sizes.max,
            sizes.max + 1, 3 * sizes.max + 17]


@pytest.mark.parametrize("sizes", SIZE_SETS, ids=str)
def test_edge_lengths_match_casync(casync: str, tmp_path: Path, sizes: ChunkSizes) -> None:
    rng = random.Random(sizes.avg)
    for length in edge_lengths(sizes):
        for data in (rng.randbytes(length), bytes(length), b"ab" * (length // 2)):
            assert boundaries(data, sizes) == casync_boundaries(casync, tmp_path, data, sizes), length


@pytest.mark.parametrize("sizes", SIZE_SETS[1:], ids=str)
def test_cut_at_exactly_min_matches_casync(casync: str, tmp_path: Path, sizes: ChunkSizes) -> None:
    data = craft_cut_at_min(sizes, seed=sizes.min)
    ours = boundaries(data, sizes)
    assert ours[0] == sizes.min
    assert ours == casync_boundaries(casync, tmp_path, data, sizes)


def test_mixed_data_matches_casync(casync: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    parts = [rng.randbytes(300_000), bytes(700_000), b"x" * 90_000, rng.randbytes(50_000),
             (b"0123456789abcdef" * 4096) * 5, rng.randbytes(200_000)]
    data = b"".join(parts)
    for sizes in SIZE_SETS:
        assert boundaries(data, sizes) == casync_boundaries(casync, tmp_path, data, sizes)


def test_fixed_size_mode_matches_casync(casync: str, tmp_path: Path) -> None:
    sizes = ChunkSizes(4 * KIB, 4 * KIB, 4 * KIB)
    data = random.Random(3).randbytes(10 * 4 * KIB + 5)
    assert boundaries(data, sizes) == casync_boundaries(casync, tmp_path, data, sizes)


def test_chunker_input_matches_desync_index(peer: Path) -> None:
    data = (peer / "testdata" / "chunker.input").read_bytes()
    expected = parse_index((peer / "testdata" / "chunker.index").read_bytes())
    assert boundaries(data, ChunkSizes(16 * KIB, 64 * KIB, 256 * KIB)) == [c.end for c in expected.chunks]
    assert len(expected.chunks) == 20


def test_block_reads_do_not_move_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(11).randbytes(400_000) + bytes(100_000)
    sizes = ChunkSizes(1 * KIB, 4 * KIB, 16 * KIB)
    whole = boundaries(data, sizes)
    monkeypatch.setattr("desync_ref.chunking.READ_BLOCK", 7_777)
    assert boundaries(data, sizes) == whole


SMALL_SETS = [ChunkSizes(64, 256, 1024), ChunkSizes(100, 300, 5000), ChunkSizes(1, 2, 4),
              ChunkSizes(48, 48, 200), ChunkSizes(1024, 4096, 16384)]


@pytest.fixture(scope="module")
def compiled_chunker() -> object:
    module = kernels.load_compiled("chunker")
    if module is None:
        pytest.skip("the mypyc-compiled chunker is not built (no C compiler at install time)")
    return module


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=6000),
                      st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=40), st.integers(1, 300))),
       sizes=st.sampled_from(SMALL_SETS))
def test_compiled_and_pure_cut_identically(compiled_chunker: object, data: bytes, sizes: ChunkSizes) -> None:
    pure = kernels.load_pure("chunker")
    pos = 0
    while pos < len(data):
        args = (data, pos, len(data), sizes.min, sizes.max, sizes.discriminator)
        cut = pure.find_cut(*args)
        assert compiled_chunker.find_cut(*args) == cut  # type: ignore[attr-defined]
        pos = len(data) if cut < 0 else cut
    assert compiled_chunker.buzhash(data + bytes(48), 0, 48) == pure.buzhash(data + bytes(48), 0, 48)  # type: ignore[attr-defined]


def test_backend_name_is_reported() -> None:
    assert re.fullmatch("compiled|pure|mixed", kernels.backend())
    if kernels.pure_requested():
        assert kernels.backend() == "pure"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300_000), max_size=200), st.integers(1, 2_000_000))
def test_assembler_batches_cover_every_chunk_once(sizes: list[int], target: int) -> None:
    for module in filter(None, (kernels.load_pure("assembler"), kernels.load_compiled("assembler"))):
        ends = module.batch_ends(sizes, target)
        assert ends == sorted(set(ends))
        assert (ends[-1] if ends else 0) == len(sizes)
        starts = [0, *ends][:len(ends)]
        assert all(sum(sizes[a:b - 1]) < target for a, b in zip(starts, ends, strict=True))


def _rol32(value: int, shift: int) -> int:
    shift %= 32
    return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF if shift else value


def _window_hashing_to(target: int, seed: int) -> bytes:
    """48 bytes whose buzhash is ``target``: each byte picks one of two values, and the hash
    is linear over GF(2) in those picks, so Gaussian elimination finds them."""
    rng = random.Random(seed)
    while True:
        pairs = [rng.sample(range(256), 2) for _ in range(WINDOW_SIZE)]
        base = [a for a, _ in pairs]
        need = target ^ buzhash(bytes(base), 0, WINDOW_SIZE)
        # column k: what switching byte k from its first to its second value flips
        pivots: dict[int, tuple[int, int]] = {}  # top bit -> (vector, mask of bytes switched)
        for k, (a, b) in enumerate(pairs):
            vector = _rol32(BUZHASH_TABLE[a] ^ BUZHASH_TABLE[b], WINDOW_SIZE - 1 - k)
            mask = 1 << k
            while vector:
                top = vector.bit_length() - 1
                if top not in pivots:
                    pivots[top] = (vector, mask)
                    break
                vector, mask = vector ^ pivots[top][0], mask ^ pivots[top][1]
        chosen = 0
        while need:
            top = need.bit_length() - 1
            if top not in pivots:
                break
            need, chosen = need ^ pivots[top][0], chosen ^ pivots[top][1]
        if need == 0:
            window = bytes(pairs[k][1] if chosen >> k & 1 else pairs[k][0] for k in range(WINDOW_SIZE))
            assert buzhash(window, 0, WINDOW_SIZE) == target
            return window


def _cut_by_division(data: bytes, pos: int, end: int, lo: int, hi: int, d: int) -> int:
    """casync's rule spelled out with ``%`` on every byte (no divisibility trick)."""
    i = pos + max(lo, WINDOW_SIZE)
    if i > end:
        return -1
    h = buzhash(data, i - WINDOW_SIZE, WINDOW_SIZE)
    if i - pos >= hi or h % d == d - 1:
        return i
    while i < min(pos + hi, end):
        h = buzhash_roll(h, data[i - WINDOW_SIZE], data[i])
        i += 1
        if h % d == d - 1:
            return i
    return i if i == pos + hi else -1


@pytest.mark.parametrize("discriminator", [3, 49535, 65537, 1 << 12, 3 << 10])
@pytest.mark.parametrize("step", range(1, 9))
def test_all_ones_hash_cuts_only_where_division_does(step: int, discriminator: int) -> None:
    """h == 2**32 - 1 makes ``h + 1`` wrap to 0 in the 32-bit divisibility test, which
    reads 0 as a multiple of every d; only powers of two really divide 2**32. The window
    hashing to all ones ends ``step`` bytes into the scan, so it lands on every position of
    the eight-byte step; both backends must follow ``%``."""
    window = _window_hashing_to(0xFFFFFFFF, step)
    backends = [kernels.load_pure("chunker")]
    compiled = kernels.load_compiled("chunker")
    if compiled is not None:
        backends.append(compiled)
    rng = random.Random(step)
    for _ in range(1000):  # a prefix whose hashes give no earlier cut
        data = rng.randbytes(step) + window + rng.randbytes(200)
        args = (data, 0, len(data), WINDOW_SIZE, len(data), discriminator)
        expected = _cut_by_division(*args)
        if expected == -1 or expected >= step + WINDOW_SIZE:
            break
    else:
        raise AssertionError("no prefix without an earlier cut")
    if discriminator & (discriminator - 1) == 0:
        assert expected == step + WINDOW_SIZE
    else:
        assert expected != step + WINDOW_SIZE
    for module in backends:
        assert module.find_cut(*args) == expected
