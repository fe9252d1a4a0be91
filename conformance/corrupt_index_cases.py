"""Corrupted indexes: ``extract`` of a damaged copy of ``golden/cs4k_text_256k.caibx`` must
fail cleanly and say what is wrong (spec/index.md; casync ``src/caindex.c`` reads the
same fields, desync ``index.go`` ``IndexFromReader`` / ``format.go`` ``FormatDecoder``).

``corrupt-index:<how>``: non-zero exit, one line on stderr, no traceback, nothing left in
the output directory, and a message that names the index file and the problem. The words
accepted for the problem are what desync ("<file>: reading chunk table: unexpected EOF",
"... tail marker not found", "chunk size N is larger than maximum M"), desync-ref ("<file>:
index is truncated ...", "... bad table tail ...") and strerror-style tools would say; a
message that names neither the file nor the problem ("nope") fails.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conformance.framework import Checks, Context, Prereq, Task
from conformance.oracle import fails_saying, left_behind
from fixtures.cases import golden_index_path, golden_store_path

# The golden case whose committed casync store the error-path checks use.
ERROR_CASE = "cs4k_text_256k"
# Neutral name of the damaged copy (no word of any problem list), looked for in messages.
DAMAGED = "damaged.caibx"

TABLE_TAIL_MARKER = 0x4B4F050E5549ECD1  # CA_FORMAT_TABLE_TAIL_MARKER, casync src/caformat.h


def _items(data: bytes) -> tuple[bytes, list[tuple[int, bytes]], bytes]:
    head, n = data[:64], (len(data) - 64 - 40) // 40
    items = [(struct.unpack_from("<Q", data, 64 + 40 * i)[0], data[64 + 40 * i + 8:64 + 40 * i + 40])
             for i in range(n)]
    return head, items, data[-40:]


def _rebuild(head: bytes, items: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<Q", off) + cid for off, cid in items)
    tail = struct.pack("<5Q", 0, 0, 48, 16 + 40 * len(items) + 40, TABLE_TAIL_MARKER)
    return head + body + tail


def _over_max(data: bytes) -> bytes:
    """Drop table items until one chunk spans more than the header's max."""
    head, items, _ = _items(data)
    cmax = struct.unpack_from("<Q", head, 40)[0]
    prev = 0
    for i, (off, _) in enumerate(items):
        j = i
        while j + 1 < len(items) and items[j][0] - prev <= cmax:
            j += 1
        if items[j][0] - prev > cmax:
            return _rebuild(head, items[:i] + items[j:])
        prev = off
    raise ValueError("index too small to build a chunk over max")


def _swap_offsets(data: bytes) -> bytes:
    head, items, _ = _items(data)
    items[1], items[2] = (items[2][0], items[1][1]), (items[1][0], items[2][1])
    return _rebuild(head, items)


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


def _tail_size(data: bytes) -> bytes:
    b = bytearray(data)
    struct.pack_into("<Q", b, len(b) - 16, struct.unpack_from("<Q", b, len(b) - 16)[0] + 40)
    return bytes(b)


# desync: "unexpected EOF" / "EOF"; desync-ref: "truncated"; others: "too short", ...
TRUNCATED = ("truncated", "eof", "end of file", "unexpected end", "short", "too small",
             "incomplete")
TAIL = ("tail", "marker", "trailer", "end of table")


@dataclass(frozen=True)
class Corruption:
    mutate: Callable[[bytes], bytes]
    words: tuple[str, ...]  # the message must hold one of these (case-insensitive)
    strict: bool = False  # casync rejects it, desync does not (skipped by --no-strict)


CORRUPTIONS: dict[str, Corruption] = {
    # desync: "input is not an index file" (its decoder sees a clean EOF)
    "empty-file": Corruption(lambda d: b"", (*TRUNCATED, "empty", "0 bytes", "not an index",
                                             "not a casync index", "not a caibx")),
    "truncated-header": Corruption(lambda d: d[:30], TRUNCATED),
    "truncated-mid-item": Corruption(lambda d: d[:64 + 40 * 3 + 20], TRUNCATED),
    "truncated-no-tail": Corruption(lambda d: d[:-40], (*TRUNCATED, *TAIL)),
    "truncated-mid-tail": Corruption(lambda d: d[:-12], (*TRUNCATED, *TAIL)),
    # desync: "reading index: unsupported header type 96824d9c7b12..."
    "bad-magic": Corruption(lambda d: _flip(d, 8), ("magic", "header", "type", "not an index",
                                                    "not a casync index", "not a caibx")),
    # desync: "reading chunk table: unsupported header type ..."; casync's table magic
    "bad-table-magic": Corruption(lambda d: _flip(d, 56), ("table",)),
    "garbled-tail-marker": Corruption(lambda d: _flip(d, len(d) - 1), TAIL),
    "garbled-tail-zero-fill": Corruption(lambda d: _flip(d, len(d) - 32), TAIL),
    # desync: "chunk size N is larger than maximum M"
    "chunk-over-max": Corruption(_over_max, ("max", "larger", "exceed", "too large", "too big",
                                             "too long")),
    # desync computes a negative size as a huge unsigned one: "... larger than maximum ..."
    "offsets-not-increasing": Corruption(_swap_offsets, ("offset", "increas", "order", "decreas",
                                                         "negative", "max", "larger", "exceed")),
    "trailing-bytes": Corruption(lambda d: d + b"trailing garbage",
                                 ("trailing", "extra", "garbage", "size", "length", *TAIL), True),
    "wrong-tail-size": Corruption(_tail_size, ("size", "length", *TAIL), True),
}


def corrupt_task(name: str, corruption: Corruption) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        if corruption.strict and not ctx.strict:
            c.skip("", "casync-strict index check (desync tolerates it); --no-strict given")
            return
        base = golden_index_path(ERROR_CASE)
        store = golden_store_path(ERROR_CASE)
        if not base.exists() or not store.is_dir():
            raise Prereq(f"golden fixture {ERROR_CASE} missing; run make fixtures")
        bad = work / DAMAGED
        bad.write_bytes(corruption.mutate(base.read_bytes()))
        outdir = work / "outdir"
        outdir.mkdir()
        proc = ctx.run.impl_run("extract", "-s", store, bad, outdir / "out")
        c.expect("", fails_saying(proc, (DAMAGED,), corruption.words) or left_behind(outdir))

    return Task(f"corrupt-index:{name}", [""], fn)


def tasks() -> list[Task]:
    return [corrupt_task(name, corruption) for name, corruption in CORRUPTIONS.items()]
