"""``diff`` of two indexes (``.caibx``/``.caidx``): header fields, the first chunk boundary
where they part, a summary, and with the blob an explanation by casync's chunker rules.

Spec: ``spec/diff.md`` § "Indexes". Header fields and the table are those of
``formats/index.py`` (casync ``CaFormatIndex``, ``CaFormatTable``). The explanation reruns
casync's cut rule (``ca_chunker_scan``, ``src/cachunker.c``, here ``kernels.chunker
.find_cut``) from the offset where the tables part, and checks the other side against the
two known rules desync cuts by instead (spec/deviations.md § Chunker): its first candidate
is ``min + 1`` (``Chunker.Next``, ``chunker.go``) and its discriminator is not clamped
(``discriminatorFromAvg``, ``NewChunker``). These are checks of one chunk, not a second
chunker.
"""

from __future__ import annotations

from typing import BinaryIO, Final

from desync_ref import kernels
from desync_ref.audit import deviations
from desync_ref.audit.deviations import Side
from desync_ref.audit.diff_report import Report
from desync_ref.chunking import ChunkSizes, discriminator_from_avg
from desync_ref.formats import constants
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import Index, IndexChunk


def _single_bit_names() -> dict[int, str]:
    """Every one-bit feature flag by casync's name without ``CA_FORMAT_``."""
    names: dict[int, str] = {}
    for name, value in vars(constants).items():
        if (name.startswith(("CA_FORMAT_WITH_", "CA_FORMAT_EXCLUDE_")) or name == "CA_FORMAT_SHA512_256") \
                and isinstance(value, int) and value and not value & (value - 1):
            names[value] = name.removeprefix("CA_FORMAT_")
    return names


FLAG_NAMES: Final = _single_bit_names()


def flag_names(flags: int) -> list[str]:
    """Names of the bits of ``flags``, lowest bit first (unknown bits as hex)."""
    out = []
    bit = 1
    while bit <= flags:
        if flags & bit:
            out.append(FLAG_NAMES.get(bit, f"0x{bit:x}"))
        bit <<= 1
    return out


def compare_flags(report: Report, where: str, a: int, b: int,
                  known: list[tuple[deviations.Deviation, Side]] | None = None) -> None:
    """One line per side holding bits the other lacks (none when equal); the known
    divergences that explain them go with the last of those lines."""
    if a == b:
        return
    report.add(where, f"A 0x{a:016x}, B 0x{b:016x}", difference=False)
    pending = list(known or [])
    lines = [(side, flag_names(mine & ~other))
             for side, mine, other in (("A", a, b), ("B", b, a)) if mine & ~other]
    for n, (side, extra) in enumerate(lines):
        them = "it" if len(extra) == 1 else "them"
        other = "B" if side == "A" else "A"
        deviation, desync = pending.pop(0) if pending and n == len(lines) - 1 else (None, None)
        report.add(where, f"{side} has {'|'.join(extra)}, {other} lacks {them}", deviation, desync)
    for deviation, desync in pending:
        report.add(where, "see above", deviation, desync, difference=False)


def _sizes(index: Index) -> ChunkSizes:
    return ChunkSizes(index.chunk_size_min, index.chunk_size_avg, index.chunk_size_max)


def _short(chunk_id: bytes) -> str:
    return chunk_id.hex()[:16] + "…"


def first_divergence(a: Index, b: Index) -> int | None:
    """Table position of the first chunk that differs (by start, size or id), None if the
    tables are equal."""
    n = min(len(a.chunks), len(b.chunks))
    i = 0
    while i < n and a.chunks[i] == b.chunks[i]:
        i += 1
    if i == len(a.chunks) == len(b.chunks):
        return None
    return i


def diff_indexes(a: Index, b: Index) -> Report:
    report = Report("index")
    same_chunks = a.chunks == b.chunks
    known = deviations.index_flags(a.feature_flags, b.feature_flags, same_chunks)
    compare_flags(report, "feature flags", a.feature_flags, b.feature_flags, known)
    sa, sb = _sizes(a), _sizes(b)
    if sa != sb:
        report.add("chunk sizes", f"A {sa}, B {sb}")
    else:
        report.add("chunk sizes", f"same, {sa}", difference=False)
    if a.length != b.length:
        report.add("length", f"A {a.length} bytes, B {b.length} bytes")
    i = first_divergence(a, b)
    if i is None:
        report.add("chunks", f"the same {len(a.chunks)} chunks", difference=False)
    else:
        report.add("first difference", _divergence_text(a, b, i))
        start = a.chunks[i].start if i < len(a.chunks) else b.chunks[i].start
        common = set(c.end for c in a.chunks) & set(c.end for c in b.chunks)
        later = [end for end in common if end > start]
        if later:
            report.add("boundaries", f"meet again at offset {min(later)}", difference=False)
        else:
            report.add("boundaries", "never meet again", difference=False)
    _summary(report, a, b)
    return report


def _divergence_text(a: Index, b: Index, i: int) -> str:
    if i == len(a.chunks):
        return f"chunk {i} at offset {b.chunks[i].start}: A ends there, B goes on to {b.length}"
    if i == len(b.chunks):
        return f"chunk {i} at offset {a.chunks[i].start}: B ends there, A goes on to {a.length}"
    ca, cb = a.chunks[i], b.chunks[i]
    if ca.end == cb.end:
        return (f"chunk {i} at offset {ca.start}: same boundary {ca.end}, different ids "
                f"A {_short(ca.id)}, B {_short(cb.id)}")
    return (f"chunk {i} at offset {ca.start}: A cuts at {ca.end} ({ca.size} bytes), "
            f"B at {cb.end} ({cb.size} bytes)")


def _summary(report: Report, a: Index, b: Index) -> None:
    ids_a, ids_b = {c.id for c in a.chunks}, {c.id for c in b.chunks}
    reused = sum(c.size for c in b.chunks if c.id in ids_a)
    report.summary.append(
        f"summary: {len(a.chunks)} chunks in A, {len(b.chunks)} in B; {len(ids_a & ids_b)} "
        f"shared, {len(ids_a - ids_b)} only in A, {len(ids_b - ids_a)} only in B "
        f"(distinct ids); {reused} of B's {b.length} bytes re-use A's chunks")


# --- --explain ------------------------------------------------------------------------------

def _cut(data: bytes, min_size: int, max_size: int, discriminator: int) -> int:
    """End (relative to ``data[0]``) of the chunk starting at ``data[0]`` by casync's scan
    with these parameters; ``data`` holds ``max_size`` bytes unless the blob ends sooner."""
    if min_size == max_size:
        return min(min_size, len(data))
    cut: int = kernels.load("chunker").find_cut(data, 0, len(data), min_size, max_size, discriminator)
    return len(data) if cut < 0 else cut


def _read(blob: BinaryIO, start: int, size: int) -> bytes:
    blob.seek(start)
    return blob.read(size)


def explain(report: Report, a: Index, b: Index, blob: BinaryIO, blob_size: int) -> None:
    """Say which side cuts (or hashes) the first differing chunk as casync would."""
    i = first_divergence(a, b)
    if i is None:
        return
    for side, index in (("A", a), ("B", b)):
        if index.length != blob_size:
            report.add("explain", f"the blob is {blob_size} bytes, {side} describes "
                       f"{index.length}: {side} is not an index of this blob", difference=False)
    if i >= len(a.chunks) or i >= len(b.chunks):
        return
    ca, cb = a.chunks[i], b.chunks[i]
    if ca.end == cb.end:
        data = _read(blob, ca.start, ca.size)
        for side, index, chunk in (("A", a, ca), ("B", b, cb)):
            good = digest_function(index.digest)(data) == chunk.id
            report.add("explain", f"{side}'s id of chunk {i} {'matches' if good else 'does not match'} "
                       f"the blob's bytes ({index.digest})", difference=False)
        return
    sides: tuple[tuple[Side, Index, IndexChunk], ...] = (("A", a, ca), ("B", b, cb))
    for side, index, chunk in sides:
        _explain_cut(report, side, index, chunk, _read(blob, chunk.start, index.chunk_size_max))


def _explain_cut(report: Report, side: Side, index: Index, chunk: IndexChunk, data: bytes) -> None:
    sizes = _sizes(index)
    lo, hi, d = sizes.min, sizes.max, sizes.discriminator
    start = chunk.start
    casync = _cut(data, lo, hi, d)
    at_min = " (exactly min: the hash test at min passes)" if casync == lo and lo < hi else ""
    if chunk.size == casync:
        report.add("explain", f"{side} follows casync's rules: the chunk starting at {start} "
                   f"ends at {start + casync}{at_min}", difference=False)
        return
    report.add("explain", f"{side} does not follow casync's rules: casync would end the chunk "
               f"starting at {start} at {start + casync}{at_min}, {side} ends it at {chunk.end}",
               difference=False)
    # desync's rules (spec/deviations.md § Chunker): first candidate min + 1, discriminator
    # not clamped into [min, max]. Try each alone, then both.
    raw = discriminator_from_avg(sizes.avg)
    unclamped = raw if raw > 0 else d
    later = min(lo + 1, hi)
    candidates: list[tuple[list[deviations.Deviation], int]] = []
    if casync == lo and lo < hi:
        candidates.append(([deviations.CUT_AT_MIN], _cut(data, later, hi, d)))
    if unclamped != d:
        candidates.append(([deviations.DISCRIMINATOR_CLAMP], _cut(data, lo, hi, unclamped)))
        candidates.append(([deviations.CUT_AT_MIN, deviations.DISCRIMINATOR_CLAMP],
                           _cut(data, later, hi, unclamped)))
    for known, cut in candidates:
        if cut == chunk.size:
            for deviation in known:
                report.add("explain", f"{side} cuts at {chunk.end}", deviation, side,
                           difference=False)
            return
    report.add("explain", f"{side} follows neither casync's rules nor a known desync "
               "difference", difference=False)
