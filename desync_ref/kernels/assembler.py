"""The assembler's bookkeeping loop: grouping consecutive chunks into write batches.

Spec: ``spec/store.md`` (reading chunks). The bytes themselves are moved by C code
(zstandard, hashlib, ``os.pwrite``), which releases the GIL; what Python does per chunk
is this loop, typed for mypyc like the chunker.
"""

from __future__ import annotations

from mypy_extensions import i64


def batch_ends(sizes: list[int], target: i64) -> list[int]:
    """Exclusive end positions (in ``sizes``) of runs of chunks adding up to ``target`` bytes.

    Handing a worker thread a batch instead of a single chunk keeps the per-task overhead
    and GIL hand-offs small next to the hashing and decompression it waits for.
    """
    ends: list[int] = []
    total: i64 = 0
    n: i64 = 0
    count: i64 = len(sizes)
    while n < count:
        total += sizes[n]
        n += 1
        if total >= target:
            ends.append(n)
            total = 0
    if total > 0:
        ends.append(count)
    return ends
