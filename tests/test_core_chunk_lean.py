"""The lean read path of extract's workers (spec/extract.md § "Lean store reads"):
decompress_exact accepts only what decompress accepts, and gives the same bytes; the
per-thread zstd decompressor survives a bad frame; raw_frame_content takes only frames of
stored blocks that decompress takes, with the same bytes; ChunkFileReader gives checked bytes
or None (the caller then asks get_chunk for the verdict); zero_blocks finds exactly the zero
blocks a plain scan finds."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import zstandard

from desync_ref.errors import ChunkInvalid
from desync_ref.formats import chunk
from desync_ref.formats.chunk import (
    chunk_file_name,
    compress,
    decompress,
    decompress_exact,
    digest_function,
    raw_frame_content,
)
from desync_ref.fs.holes import zero_blocks
from desync_ref.stores import Chunk
from desync_ref.stores.local import LocalStore
from desync_ref.stores.storage_form import StorageForm

DIGEST = digest_function("sha512-256")


def _data(rng: random.Random, size: int) -> bytes:
    """Random bytes with runs of zeros and of one letter (RLE and compressed blocks)."""
    out = bytearray(rng.randbytes(size))
    for _ in range(rng.randrange(4)):
        a = rng.randrange(size + 1)
        b = rng.randrange(a, size + 1)
        out[a:b] = bytes([rng.choice((0, 65))]) * (b - a)
    return bytes(out)


FRAMES = {
    "casync": lambda d: compress(d),  # no content size, no checksum
    "content size": lambda d: zstandard.ZstdCompressor().compress(d),
    "checksum": lambda d: zstandard.ZstdCompressor(write_checksum=True,
                                                   write_content_size=False).compress(d),
    "both": lambda d: zstandard.ZstdCompressor(write_checksum=True).compress(d),
}


@pytest.mark.parametrize("form", sorted(FRAMES))
@pytest.mark.parametrize("size", [1, 1000, 65536, 300_000])
def test_exact_decodes_what_decompress_decodes(form: str, size: int) -> None:
    data = _data(random.Random(size), size)
    frame = FRAMES[form](data)
    assert decompress_exact(frame, size) == data
    assert decompress_exact(memoryview(bytearray(frame)), size) == data
    assert decompress(frame) == data


@pytest.mark.parametrize("old_zstandard", [False, True])
def test_exact_refuses_anything_else(old_zstandard: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if old_zstandard:  # before 0.22 decompress() had no allow_extra_data: extra data passed
        monkeypatch.setattr(chunk, "_strict", dict)
    data = _data(random.Random(5), 70_000)
    frame = compress(data)
    sized = zstandard.ZstdCompressor().compress(data)
    refused = {
        "one byte after": frame + b"\x00",
        "a second frame": frame + frame,  # zstandard's own allow_extra_data misses this
        "cut short": frame[:-1],
        "header only": frame[:6],
        "empty": b"",
        "xz": b"\xfd7zXZ\x00" + frame,
    }
    for name, blob in refused.items():
        assert decompress_exact(blob, len(data)) is None, name
        with pytest.raises(ChunkInvalid):
            decompress(blob)
    for blob in (frame, sized):  # the right frame, the wrong size: both ways
        assert decompress_exact(blob, len(data) - 1) is None
        assert decompress_exact(blob, len(data) + 1) is None


def _damaged(rng: random.Random, frame: bytes, *, header_bias: bool) -> bytes:
    """``frame`` with one or two random edits: a bit flipped, bytes cut out or put in, or
    (an edit that does nothing) left whole. ``header_bias``: half the edits fall in the
    first 16 bytes, where the frame header and the first block header are."""
    damaged = bytearray(frame)
    for _ in range(rng.randrange(1, 3)):
        span = min(len(damaged), 16) if header_bias and rng.randrange(2) else len(damaged)
        at = rng.randrange(span)
        action = rng.randrange(4)
        if action == 0:
            damaged[at] ^= 1 << rng.randrange(8)
        elif action == 1:
            del damaged[at:at + rng.randrange(1, 4)]
        elif action == 2:
            damaged[at:at] = rng.randbytes(rng.randrange(1, 4))
    return bytes(damaged)


def test_exact_never_accepts_what_decompress_refuses() -> None:
    """Damaged frames: whatever decompress_exact takes, decompress takes too, with the
    same bytes (the workers' lean path must never pass a chunk the full path refuses)."""
    rng = random.Random(11)
    accepted = 0
    for n in range(1500):
        data = _data(rng, rng.choice((300, 5000, 70_000)))
        frame = _damaged(rng, FRAMES[rng.choice(sorted(FRAMES))](data), header_bias=False)
        got = decompress_exact(frame, len(data))
        if got is not None:
            accepted += 1
            assert decompress(frame, limit=len(data)) == got, n
    assert accepted > 100  # undamaged and harmlessly damaged frames were taken


def test_decompressor_is_reused_after_a_bad_frame() -> None:
    """The thread's one decompressor starts clean after a frame that failed mid-way."""
    data = _data(random.Random(3), 100_000)
    frame = compress(data)
    for bad in (frame[:-7], frame[:len(frame) // 2], frame + b"junk", frame + frame):
        with pytest.raises(ChunkInvalid):
            decompress(bad)
        assert decompress(frame) == data
        assert decompress_exact(bad, len(data)) is None
        assert decompress_exact(frame, len(data)) == data


# Frames of stored blocks, as incompressible data makes them: casync's form (no content
# size; 128 KiB blocks), declared sizes of each field width, and small windows (blocks of
# 1 KiB to 64 KiB: many blocks to gather).
RAW_FRAMES = {
    "casync": lambda d: compress(d),
    "content size": lambda d: zstandard.ZstdCompressor().compress(d),
    "window 2**10": lambda d: zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(window_log=10)).compress(d),
    "window 2**16": lambda d: zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(
            window_log=16, write_content_size=False)).compress(d),
}


def _raw_content(frame: bytes, size: int) -> bytes | None:
    buffer = bytearray(frame) + bytearray(64)  # the reader's buffer is bigger than the file
    start = raw_frame_content(buffer, len(frame), size)
    return None if start < 0 else bytes(buffer[start:start + size])


@pytest.mark.parametrize("form", sorted(RAW_FRAMES))
@pytest.mark.parametrize("size", [1, 255, 256, 5000, 65535, 65536, 65792, 131072, 200_000, 262144])
def test_raw_frames_are_taken_where_they_were_read(form: str, size: int) -> None:
    data = random.Random(size).randbytes(size)
    frame = RAW_FRAMES[form](data)
    assert _raw_content(frame, size) == data == decompress(frame)
    assert _raw_content(frame, size - 1) is None
    assert _raw_content(frame, size + 1) is None


def test_casync_raw_frames_are_taken() -> None:
    """The chunk files casync wrote for the golden fixtures: its incompressible ones are
    taken, with decompress's bytes; the others are left to the decoder."""
    taken = 0
    for path in sorted(Path("fixtures/golden").rglob("*.cacnk")):
        if path.is_symlink():
            continue
        frame = path.read_bytes()
        data = decompress(frame)
        got = _raw_content(frame, len(data))
        assert got in (None, data), path
        taken += got is not None
    assert taken >= 20


def test_raw_frames_refused() -> None:
    data = random.Random(2).randbytes(70_000)
    frame = compress(data)
    refused = {
        "compressible": compress(bytes(70_000)),
        "checksum": zstandard.ZstdCompressor(write_checksum=True).compress(data),
        "one byte after": frame + b"\x00",
        "a second frame": frame + frame,
        "cut short": frame[:-1],
        "header only": frame[:9],
        "empty": b"",
        "no last block": frame[:6] + bytes([frame[6] & 0xFE]) + frame[7:],
        "block past the window": frame[:5] + b"\x00" + frame[6:],  # 1 KiB window
    }
    for name, blob in refused.items():
        assert _raw_content(blob, len(data)) is None, name
        if name != "compressible":
            with pytest.raises(ChunkInvalid):
                decompress(blob) if name != "checksum" else decompress(blob[:-1])


def test_raw_never_accepts_what_decompress_refuses() -> None:
    """Damaged frames of stored blocks: whatever raw_frame_content takes, decompress takes
    too, with the same bytes."""
    rng = random.Random(13)
    accepted = 0
    for n in range(3000):
        size = rng.choice((300, 5000, 70_000, 140_000))
        data = rng.randbytes(size)
        frame = _damaged(rng, RAW_FRAMES[rng.choice(sorted(RAW_FRAMES))](data), header_bias=True)
        got = _raw_content(frame, size)
        if got is not None:
            accepted += 1
            assert decompress(frame, limit=size) == got, n
    assert accepted > 500


def _store(tmp_path: Path, uncompressed: bool = False) -> tuple[LocalStore, list[bytes]]:
    store = LocalStore(tmp_path / "s", create=True, uncompressed=uncompressed)
    rng = random.Random(7)
    chunks = [_data(rng, size) for size in (1, 4096, 65536, 200_000)]
    for data in chunks:
        store.store_chunk(Chunk(DIGEST(data), data=data))
    return store, chunks


@pytest.mark.parametrize("uncompressed", [False, True])
def test_reader_gives_checked_chunks(tmp_path: Path, uncompressed: bool) -> None:
    store, chunks = _store(tmp_path, uncompressed)
    reader = store.file_reader(DIGEST, 200_000)
    assert reader is not None
    for data in chunks:
        assert bytes(reader.read(DIGEST(data), len(data)) or b"") == data
        assert reader.read(DIGEST(data), len(data) + 1) is None  # the index's size differs
    assert reader.read(DIGEST(b"absent"), 6) is None


@pytest.mark.parametrize("uncompressed", [False, True])
def test_reader_leaves_the_unusual_to_get_chunk(tmp_path: Path, uncompressed: bool) -> None:
    store, chunks = _store(tmp_path, uncompressed)
    reader = store.file_reader(DIGEST, 200_000)
    assert reader is not None
    suffix = store.suffix
    path = {n: Path(store.path, chunk_file_name(DIGEST(d), suffix)) for n, d in enumerate(chunks)}
    path[0].unlink()  # missing: casync's marker is a symlink at the chunk's name
    path[0].symlink_to(path[1])
    path[1].write_bytes(path[1].read_bytes() + b"\x00")  # trailing data
    path[2].write_bytes(path[3].read_bytes())  # another chunk's bytes under this id
    other = Path(store.path, chunk_file_name(DIGEST(chunks[3]), ".cacnk" if uncompressed else ""))
    other.write_bytes(compress(chunks[3]) if uncompressed else chunks[3])
    path[3].unlink()  # stored in the other form only
    for data in chunks:
        assert reader.read(DIGEST(data), len(data)) is None
    # get_chunk reads the other form; the damaged ones it refuses, as before
    assert store.get_chunk(DIGEST(chunks[3]), DIGEST).data() == chunks[3]


def test_reader_refuses_a_file_past_its_buffer(tmp_path: Path) -> None:
    store, chunks = _store(tmp_path, uncompressed=True)
    reader = store.file_reader(DIGEST, 4096)  # chunks[3] is bigger than the index allows
    assert reader is not None
    assert reader.read(DIGEST(chunks[1]), 4096) == chunks[1]
    assert reader.read(DIGEST(chunks[3]), len(chunks[3])) is None


def test_no_reader_for_skip_verify_or_encryption(tmp_path: Path) -> None:
    from desync_ref.formats.encryption import chunk_cipher

    assert LocalStore(tmp_path, skip_verify=True).file_reader(DIGEST, 100) is None
    sealed = StorageForm(cipher=chunk_cipher(None, "ab" * 32))
    assert LocalStore(tmp_path, form=sealed).file_reader(DIGEST, 100) is None


def _zero_blocks_by_scan(data: bytes, offset: int, block: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    position = (-offset) % block
    while position + block <= len(data):
        if data[position:position + block] == bytes(block):
            if runs and runs[-1][1] == position:
                runs[-1] = (runs[-1][0], position + block)
            else:
                runs.append((position, position + block))
        position += block
    return runs


def test_zero_blocks_finds_what_a_scan_finds() -> None:
    rng = random.Random(17)
    for n in range(2000):
        block = rng.choice((512, 4096))
        size = rng.randrange(0, 40_000)
        data = bytearray(os.urandom(size) if rng.random() < 0.5 else bytes(size))
        for _ in range(rng.randrange(8)):
            a = rng.randrange(size + 1)
            b = rng.randrange(a, size + 1)
            data[a:b] = bytes(b - a) if rng.random() < 0.6 else os.urandom(b - a)
        for _ in range(rng.randrange(4)):  # single bytes: a block starting with zero, or not
            if size:
                data[rng.randrange(size)] = rng.choice((0, 1))
        offset = rng.randrange(10_000)
        for form in (bytes(data), memoryview(bytes(data))):
            assert zero_blocks(form, offset, block) == _zero_blocks_by_scan(bytes(data), offset,
                                                                           block), n
