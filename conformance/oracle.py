"""What the checks compare against: index bytes, chunk stores, outputs, error reports.

Independent of ``desync_ref``: the caibx reader is ``fixtures.cases.parse_index`` (written
from casync's ``src/caformat.h``, no library code), chunk contents are checked with
``zstandard`` and ``hashlib``. Every function returns ``None`` when all is well, else one
line saying what is wrong; ``Missing`` is raised when a check cannot be made at all.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from conformance.framework import Missing, Proc
from fixtures.cases import FLAGS_OFFSET, ParsedIndex, parse_index, store_ids

# Index feature flags casync writes for a blob (casync src/caformat.h: CA_FORMAT_SHA512_256
# | CA_FORMAT_EXCLUDE_FILE | ...); desync writes them without EXCLUDE_FILE.
CASYNC_FLAGS = {"sha512-256": 0xB000000000000000, "sha256": 0x9000000000000000}
CA_FORMAT_EXCLUDE_FILE = 0x1000000000000000


# --- bytes and indexes -------------------------------------------------------------------------

def first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n
    while hi - lo > 1:  # binary search on prefixes
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def compare_bytes(got: bytes, want: bytes, what: str) -> str | None:
    if got == want:
        return None
    at = first_difference(got, want)
    return f"{what} differs: {len(got)} bytes vs expected {len(want)}, first difference at byte {at}"


def compare_file(path: Path, want: bytes, what: str) -> str | None:
    """``path`` exists and holds exactly ``want``."""
    if not path.exists():
        return f"no output file {path.name}"
    return compare_bytes(path.read_bytes(), want, what)


def _fmt_chunk(c: tuple[int, int, str] | None) -> str:
    return "none" if c is None else f"{c[0]}+{c[1]} {c[2][:16]}…"


def index_flags(data: bytes) -> int | None:
    return struct.unpack_from("<Q", data, FLAGS_OFFSET)[0] if len(data) >= FLAGS_OFFSET + 8 else None


def compare_index(got: bytes, want: bytes, *, ignore_flags: bool = False,
                  desync_flags: bool = False) -> str | None:
    """``got`` is byte-identical to ``want`` (with ``desync_flags``: up to desync's flags,
    casync's without EXCLUDE_FILE); else where the first difference is, by chunk."""
    g_flags, w_flags = index_flags(got), index_flags(want)
    if (desync_flags and g_flags is not None and w_flags is not None
            and g_flags | CA_FORMAT_EXCLUDE_FILE == w_flags):
        ignore_flags = True
    if ignore_flags:
        got = got[:FLAGS_OFFSET] + want[FLAGS_OFFSET:FLAGS_OFFSET + 8] + got[FLAGS_OFFSET + 8:]
    if got == want:
        return None
    problem = compare_bytes(got, want, "index")
    try:
        g, w = parse_index(got), parse_index(want)
    except ValueError as exc:
        return f"{problem}; the produced index does not parse: {exc}"
    if (g.feature_flags, g.min, g.avg, g.max) != (w.feature_flags, w.min, w.avg, w.max):
        return (f"{problem}; header flags/min/avg/max {g.feature_flags:#x} {g.min}:{g.avg}:{g.max}"
                f" vs expected {w.feature_flags:#x} {w.min}:{w.avg}:{w.max}")
    for i in range(max(len(g.chunks), len(w.chunks))):
        gc = g.chunks[i] if i < len(g.chunks) else None
        wc = w.chunks[i] if i < len(w.chunks) else None
        if gc != wc:
            return (f"{problem}; chunk {i} of {len(g.chunks)} is {_fmt_chunk(gc)}, expected "
                    f"{_fmt_chunk(wc)} of {len(w.chunks)}")
    return problem


# --- chunk stores ------------------------------------------------------------------------------

def chunk_path(store: Path, cid: str) -> Path:
    return store / cid[:4] / f"{cid}.cacnk"


def _zstandard() -> ModuleType:
    try:
        import zstandard
    except ImportError as exc:
        raise Missing(f"zstandard is not importable ({exc}): chunk contents not checked") from exc
    return zstandard


def check_chunk_file(path: Path, cid: str, digest: str) -> str | None:
    """``path`` is a zstd frame whose content hashes to ``cid``. Raises ``Missing`` without
    ``zstandard``: a chunk that cannot be decoded is never taken as valid."""
    zstandard = _zstandard()
    raw = path.read_bytes()
    try:
        data = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    except zstandard.ZstdError as exc:
        return f"chunk file {path.name} is not zstd: {exc}"
    algo = "sha512_256" if digest == "sha512-256" else "sha256"
    actual = hashlib.new(algo, data).hexdigest()
    if actual != cid:
        return f"chunk file {path.name} holds data hashing to {actual}"
    return None


def check_chunk_files(store: Path, ids: Iterable[str], digest: str) -> str | None:
    for cid in sorted(ids):
        problem = check_chunk_file(chunk_path(store, cid), cid, digest)
        if problem:
            return problem
    return None


def verify_store(store: Path, index: ParsedIndex, digest: str, *, exact: bool = True,
                 check_content: bool = True) -> str | None:
    """The store holds the index's chunks (exactly them if ``exact``), each valid."""
    have = set(store_ids(store))
    want = set(index.ids)
    missing = want - have
    if missing:
        return f"store lacks {len(missing)} of the index's {len(want)} chunks, e.g. {min(missing)}"
    extra = have - want
    if exact and extra:
        return f"store has {len(extra)} chunks not in the index, e.g. {min(extra)}"
    return check_chunk_files(store, want, digest) if check_content else None


# --- commands ----------------------------------------------------------------------------------

def success_problem(proc: Proc) -> str | None:
    return None if proc.rc == 0 else proc.why()


def error_problem(proc: Proc) -> str | None:
    """A command that must fail: non-zero, a one-line message, no traceback, no crash."""
    err = proc.stderr.strip()
    if proc.rc == 0:
        return f"`{proc.cmd}` succeeded but must fail"
    if proc.rc < 0 or proc.rc == 127:
        return f"{proc.why()} (crash or not runnable)"
    if not err:
        return f"`{proc.cmd}` exited {proc.rc} with nothing on stderr"
    if "Traceback" in err:
        return f"`{proc.cmd}` printed a traceback: {err.splitlines()[-1]}"
    if len(err.splitlines()) != 1:
        return f"`{proc.cmd}` printed {len(err.splitlines())} lines on stderr: {err!r:.300}"
    return None


def says(proc: Proc, *groups: Iterable[str]) -> str | None:
    """The error message names the problem: for every group, it contains (case-insensitive)
    at least one of the group's words. Groups hold what any sane implementation's message
    holds (the file it could not use, a chunk id, "not a directory", ...), not one tool's
    wording."""
    err = proc.stderr.strip().lower()
    for group in groups:
        words = list(group)
        if not any(w.lower() in err for w in words):
            shown = " or ".join(repr(w) for w in words)
            return f"`{proc.cmd}` failed, but its message does not name the problem (no {shown}): " \
                   f"{proc.stderr.strip()!r:.300}"
    return None


def fails_saying(proc: Proc, *groups: Iterable[str]) -> str | None:
    """``error_problem`` and then ``says``."""
    return error_problem(proc) or says(proc, *groups)


def left_behind(directory: Path) -> str | None:
    """Nothing was left in the directory an output should have gone to."""
    found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    return f"left {found} in the output directory" if found else None


def chunk_lines(proc: Proc) -> list[tuple[int, int, str]] | str:
    """``chunk`` output (``start size id`` per line), or why it cannot be parsed."""
    try:
        rows = []
        for line in proc.stdout.decode().splitlines():
            start, size, cid = line.split()
            rows.append((int(start), int(size), cid))
        return rows
    except ValueError:
        return f"cannot parse chunk output line: {proc.stdout[:200]!r}"


def id_words(ids: Iterable[str]) -> list[str]:
    """A chunk named in a message: its first 8 hex digits (messages may shorten ids)."""
    return sorted({i[:8] for i in ids})


# Words that say "this is missing" in a message, across tools: desync's "missing from store",
# desync-ref's "not found", strerror's "No such file or directory".
MISSING_WORDS = ("missing", "not found", "no such", "does not exist", "doesn't exist")
NOT_A_DIRECTORY_WORDS = ("not a directory",)
