"""Conformance runner: checks any desync-syntax tool against casync's golden output.

    python conformance/run.py --impl "desync-ref"
    python conformance/run.py --impl "python -m desync_ref" -k golden: --junit out.xml
    python conformance/run.py --impl desync --no-strict        # the Go desync

Every check prints one line, ``PASS name``, ``FAIL name: why`` or ``SKIP name: reason``,
and the run ends with ``N passed, N failed, N skipped``; the exit status is 1 if any
check failed. See ``conformance/README.md`` for the list of checks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import hashlib
import json
import os
import random
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from conformance import catar_cases  # noqa: E402
from fixtures import blobs  # noqa: E402
from fixtures.cases import (  # noqa: E402
    FLAGS_OFFSET,
    MANIFEST,
    Case,
    ChunkSet,
    ParsedIndex,
    generate_blob,
    golden_index_path,
    golden_store_path,
    load_cases,
    parse_index,
    sha256_hex,
    store_ids,
)

DEFAULT_PEER = Path(__file__).resolve().parent.parent / "fixtures" / "desync"
DEFAULT_TIMEOUT = 300.0
CASYNC_FLAGS = {"sha512-256": 0xB000000000000000, "sha256": 0x9000000000000000}
CA_FORMAT_EXCLUDE_FILE = 0x1000000000000000  # casync sets it in every index; desync doesn't
# The golden case whose committed casync store the error-path checks corrupt.
ERROR_CASE = "cs4k_text_256k"

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


# --- running commands ----------------------------------------------------------------------

# Long paths in messages are shortened to these names.
ALIASES: dict[str, str] = {}


def shorten(text: str) -> str:
    for path, alias in sorted(ALIASES.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, alias)
    return text


@dataclass
class Proc:
    argv: list[str]
    rc: int
    stdout: bytes
    stderr: str

    @property
    def cmd(self) -> str:
        return shorten(shlex.join(self.argv))

    def why(self) -> str:
        err = shorten(" | ".join(self.stderr.strip().splitlines()[-3:]))
        return f"`{self.cmd}` exited {self.rc}" + (f": {err}" if err else "")


class Runner:
    def __init__(self, impl: list[str], casync: str | None, timeout: float) -> None:
        self.impl = impl
        self.casync = casync
        self.timeout = timeout

    def run(self, argv: list[str], cwd: Path | None = None) -> Proc:
        try:
            cp = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=self.timeout,
                                stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            return Proc(argv, 127, b"", f"cannot run: {exc}")
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if exc.stderr else ""
            return Proc(argv, -999, b"", f"timed out after {self.timeout:g}s {err}")
        return Proc(argv, cp.returncode, cp.stdout, cp.stderr.decode(errors="replace"))

    def impl_run(self, *args: str | Path, digest: str = "sha512-256",
                 cwd: Path | None = None) -> Proc:
        extra = ["--digest", "sha256"] if digest == "sha256" else []
        return self.run([*self.impl, *extra, *map(str, args)], cwd=cwd)

    def casync_run(self, *args: str | Path, cwd: Path | None = None) -> Proc:
        assert self.casync is not None
        return self.run([self.casync, *map(str, args)], cwd=cwd)


# --- results ---------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


class Prereq(Exception):
    """A step that later checks of the same task depend on failed."""


@dataclass
class Checks:
    """What one task reports: one result per declared check name."""

    task: str
    names: list[str]
    selected: set[str]
    results: dict[str, Result] = field(default_factory=dict)

    def full(self, sub: str) -> str:
        return f"{self.task}:{sub}" if sub else self.task

    def wanted(self, sub: str) -> bool:
        return self.full(sub) in self.selected

    def report(self, sub: str, status: str, detail: str = "") -> None:
        name = self.full(sub)
        if name not in self.results:
            self.results[name] = Result(name, status, detail)

    def ok(self, sub: str, detail: str = "") -> None:
        self.report(sub, PASS, detail)

    def fail(self, sub: str, detail: str) -> None:
        self.report(sub, FAIL, detail)

    def skip(self, sub: str, reason: str) -> None:
        self.report(sub, SKIP, reason)

    def expect(self, sub: str, problem: str | None, detail: str = "") -> bool:
        """PASS if ``problem`` is None/empty, else FAIL with it. Returns success."""
        if problem:
            self.fail(sub, problem)
            return False
        self.ok(sub, detail)
        return True

    def finish(self, why_missing: str) -> list[Result]:
        for sub in self.names:
            if self.full(sub) not in self.results:
                self.skip(sub, why_missing)
        return [self.results[self.full(s)] for s in self.names if self.wanted(s)]


@dataclass
class Task:
    name: str
    subs: list[str]
    fn: Callable[[Context, Checks, Path], None]


@dataclass
class Context:
    run: Runner
    peer: Path | None
    strict: bool
    tmp: Path
    desync_flags: bool = False  # accept desync's flags (no EXCLUDE_FILE) for casync's
    blob_cache: dict[str, bytes] = field(default_factory=dict)


# --- comparisons -------------------------------------------------------------------------------

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


def _fmt_chunk(c: tuple[int, int, str] | None) -> str:
    return "none" if c is None else f"{c[0]}+{c[1]} {c[2][:16]}…"


def compare_index(got: bytes, want: bytes, *, ignore_flags: bool = False,
                  desync_flags: bool = False) -> str | None:
    if desync_flags and len(got) >= FLAGS_OFFSET + 8 and len(want) >= FLAGS_OFFSET + 8:
        g = struct.unpack_from("<Q", got, FLAGS_OFFSET)[0]
        w = struct.unpack_from("<Q", want, FLAGS_OFFSET)[0]
        if g | CA_FORMAT_EXCLUDE_FILE == w:
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
    if check_content:
        for cid in sorted(want):
            problem = check_chunk_file(store / cid[:4] / f"{cid}.cacnk", cid, digest)
            if problem:
                return problem
    return None


def check_chunk_file(path: Path, cid: str, digest: str) -> str | None:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency of desync-ref
        return None
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


def left_behind(directory: Path) -> str | None:
    found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    return f"left {found} in the output directory" if found else None


def success_problem(proc: Proc) -> str | None:
    return None if proc.rc == 0 else proc.why()


# --- golden cases ------------------------------------------------------------------------------

GOLDEN_SUBS = ["make", "store", "extract", "casync-fresh", "impl-extracts-casync",
               "casync-extracts-impl"]


def golden_task(case: Case, entry: dict[str, Any]) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        run = ctx.run
        blob = generate_blob(case)
        if sha256_hex(blob) != entry["blob_sha256"]:
            raise Prereq("regenerated blob differs from the manifest's (generator drift in "
                         "fixtures/blobs.py?); rerun make fixtures")
        blob_path = work / "blob"
        blob_path.write_bytes(blob)
        golden = golden_index_path(case).read_bytes()
        if sha256_hex(golden) != entry["index_sha256"]:
            raise Prereq(f"{golden_index_path(case).name} does not match the manifest's sha256")
        golden_index = parse_index(golden)
        digest = case.digest

        # impl make -> index bytes, store
        store = work / "store"
        store.mkdir()
        idx = work / "impl.caibx"
        made = run.impl_run("make", "-s", store, "-m", case.chunks.kib, idx, blob_path,
                            digest=digest)
        made_ok = made.rc == 0 and idx.exists()
        if not made_ok:
            c.fail("make", made.why() if made.rc else "no index written")
            for sub in ("store", "extract", "casync-extracts-impl"):
                c.skip(sub, "not run: the impl's make failed")
        else:
            c.expect("make", compare_index(idx.read_bytes(), golden,
                                           desync_flags=ctx.desync_flags))
            c.expect("store", verify_store(store, golden_index, digest))
            out = work / "impl.out"
            ex = run.impl_run("extract", "-s", store, idx, out, digest=digest)
            c.expect("extract", success_problem(ex) or
                     (compare_bytes(out.read_bytes(), blob, "extracted blob")
                      if out.exists() else "no output file"))

        # casync's store: the committed one, else one casync makes now (and casync's index
        # made now must still be the committed golden one)
        cstore: Path | None = golden_store_path(case) if case.store else None
        if run.casync is None:
            c.skip("casync-fresh", "casync not installed")
        else:
            fresh = work / "casync.store"
            fresh.mkdir()
            cidx = work / "casync.caibx"
            args = ["make", f"--store={fresh}", f"--chunk-size={case.chunks.casync}"]
            if digest == "sha256":
                args.append("--digest=sha256")
            cm = run.casync_run(*args, cidx, blob_path)
            if c.expect("casync-fresh", success_problem(cm) or
                        compare_index(cidx.read_bytes(), golden),
                        "casync today makes the committed golden index") and cstore is None:
                cstore = fresh
        if not c.wanted("impl-extracts-casync"):
            pass
        elif cstore is not None:
            out = work / "from-casync.out"
            ex = run.impl_run("extract", "-s", cstore, golden_index_path(case), out, digest=digest)
            c.expect("impl-extracts-casync", success_problem(ex) or
                     (compare_bytes(out.read_bytes(), blob, "extracted blob")
                      if out.exists() else "no output file"))
        else:
            c.skip("impl-extracts-casync", "casync not installed and no committed store"
                   if run.casync is None else "not run: casync-fresh failed")

        if run.casync is None:
            c.skip("casync-extracts-impl", "casync not installed")
        elif made_ok:
            out = work / "by-casync.out"
            ex = run.casync_run("extract", f"--store={store}", idx, out)
            c.expect("casync-extracts-impl", success_problem(ex) or
                     (compare_bytes(out.read_bytes(), blob, "casync's extract")
                      if out.exists() else "no output file"))

    # The impl's extract from casync's store is checked where it adds something over the
    # impl's own store: empty and multi-chunk blobs, and the committed-store cases.
    subs = list(GOLDEN_SUBS)
    if not (case.size == 0 or case.size > case.chunks.max or case.store):
        subs.remove("impl-extracts-casync")
    return Task(f"golden:{case.name}", subs, fn)


# --- live casync comparison --------------------------------------------------------------------

LIVE_SUBS = ["make", "store", "impl-extracts-casync", "casync-extracts-impl"]


def live_case(seed: int, n: int) -> Case:
    rng = random.Random(f"desync-ref-live/{seed}/{n}")
    avg_kib = rng.choice([4, 8, 16, 32, 64, 128])
    min_kib = max(1, avg_kib // rng.choice([1, 2, 4, 8]))
    max_kib = avg_kib * rng.choice([1, 2, 4, 8])
    chunks = ChunkSet(f"live{min_kib}_{avg_kib}_{max_kib}k", min_kib * 1024, avg_kib * 1024,
                      max_kib * 1024)
    kind = rng.choice([k for k in blobs.KINDS if k != "premin"])
    style = rng.random()
    if style < 0.25:
        size = rng.choice([0, 1, 47, 48, chunks.min - 1, chunks.min, chunks.min + 1,
                           chunks.max, chunks.max + 1])
    else:
        size = rng.randint(0, 1536 * 1024)
    if kind == "mincut":
        size = max(size, 2 * chunks.min + 1)
    digest = "sha256" if rng.random() < 0.2 else "sha512-256"
    name = f"{kind}-{size}-{min_kib}_{avg_kib}_{max_kib}k" + ("-sha256" if digest == "sha256" else "")
    return Case(name, kind, size, rng.randrange(1 << 32), chunks, digest)


def live_task(seed: int, n: int) -> Task:
    case = live_case(seed, n)

    def fn(ctx: Context, c: Checks, work: Path) -> None:
        run = ctx.run
        if run.casync is None:
            for sub in LIVE_SUBS:
                c.skip(sub, "casync not installed")
            return
        blob = generate_blob(case)
        blob_path = work / "blob"
        blob_path.write_bytes(blob)
        cstore, store = work / "casync.store", work / "store"
        cstore.mkdir()
        store.mkdir()
        cidx, idx = work / "casync.caibx", work / "impl.caibx"
        args = ["make", f"--store={cstore}", f"--chunk-size={case.chunks.casync}"]
        if case.digest == "sha256":
            args.append("--digest=sha256")
        cm = run.casync_run(*args, cidx, blob_path)
        if cm.rc != 0:
            raise Prereq(f"casync make failed: {cm.why()}")
        golden = cidx.read_bytes()
        made = run.impl_run("make", "-s", store, "-m", case.chunks.kib, idx, blob_path,
                            digest=case.digest)
        if not c.expect("make", success_problem(made) or
                        compare_index(idx.read_bytes(), golden, desync_flags=ctx.desync_flags)):
            c.skip("store", "not run: make failed")
            c.skip("casync-extracts-impl", "not run: make failed")
        else:
            c.expect("store", verify_store(store, parse_index(golden), case.digest))
            out = work / "by-casync.out"
            ex = run.casync_run("extract", f"--store={store}", idx, out)
            c.expect("casync-extracts-impl", success_problem(ex) or
                     compare_bytes(out.read_bytes(), blob, "casync's extract"))
        out = work / "from-casync.out"
        ex = run.impl_run("extract", "-s", cstore, cidx, out, digest=case.digest)
        c.expect("impl-extracts-casync", success_problem(ex) or
                 (compare_bytes(out.read_bytes(), blob, "extracted blob")
                  if out.exists() else "no output file"))

    return Task(f"live:{n}:{case.name}", list(LIVE_SUBS), fn)


# --- desync's own fixtures ---------------------------------------------------------------------

def _peer_paths(ctx: Context) -> tuple[Path, Path]:
    if ctx.peer is None or not (ctx.peer / "cmd/desync/testdata/blob1.caibx").exists():
        raise Prereq(f"peer fixtures not found at {ctx.peer}")
    return ctx.peer / "testdata", ctx.peer / "cmd/desync/testdata"


def peer_task(name: str, subs: list[str],
              body: Callable[[Context, Checks, Path, Path, Path], None]) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        if ctx.peer is None or not (ctx.peer / "cmd/desync/testdata/blob1.caibx").exists():
            for sub in subs:
                c.skip(sub, f"peer fixtures not found at {ctx.peer} (--peer-fixtures)")
            return
        td, cd = _peer_paths(ctx)
        body(ctx, c, work, td, cd)

    return Task(f"peer:{name}", subs, fn)


def _extract_check(ctx: Context, c: Checks, sub: str, work: Path, index: Path, want: bytes,
                   *opts: str | Path) -> None:
    out = work / f"{sub or 'out'}.out"
    ex = ctx.run.impl_run("extract", *opts, index, out)
    c.expect(sub, success_problem(ex) or
             (compare_bytes(out.read_bytes(), want, "extracted blob") if out.exists()
              else "no output file"))


def peer_extract(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    blob1, blob2 = (cd / "blob1").read_bytes(), (cd / "blob2").read_bytes()
    _extract_check(ctx, c, "blob1", work, cd / "blob1.caibx", blob1, "-s", cd / "blob1.store")
    _extract_check(ctx, c, "blob2", work, cd / "blob2.caibx", blob2, "-s", cd / "blob2.store")
    _extract_check(ctx, c, "two-stores", work, cd / "blob2.caibx", blob2,
                   "-s", cd / "empty.store", "-s", cd / "blob2.store")
    # with a cache: every chunk fetched from the store lands in the cache. desync never
    # fetches all-zero chunks (it writes zeros), so only the others are required.
    cache = work / "cache"
    cache.mkdir()
    out = work / "with-cache.out"
    ex = ctx.run.impl_run("extract", "-s", cd / "blob1.store", "-c", cache, cd / "blob1.caibx",
                          out)
    problem = success_problem(ex) or (compare_bytes(out.read_bytes(), blob1, "extracted blob")
                                      if out.exists() else "no output file")
    if not problem:
        index = parse_index((cd / "blob1.caibx").read_bytes())
        nonzero = {cid for start, size, cid in index.chunks
                   if blob1[start:start + size].count(0) != size}
        have = set(store_ids(cache))
        if not nonzero <= have or not have <= set(index.ids):
            problem = (f"cache holds {len(have)} chunks; lacks {len(nonzero - have)} non-zero "
                       f"chunks, has {len(have - set(index.ids))} foreign ones")
        else:
            problem = next(filter(None, (check_chunk_file(cache / i[:4] / f"{i}.cacnk", i,
                                                          "sha512-256") for i in sorted(have))),
                           None)
    c.expect("with-cache", problem)
    # in place: start from blob2's bytes, end with blob1
    out = work / "inplace.out"
    shutil.copyfile(cd / "blob2", out)
    ex = ctx.run.impl_run("extract", "-k", "-s", cd / "blob1.store", cd / "blob1.caibx", out)
    c.expect("in-place", success_problem(ex) or compare_bytes(out.read_bytes(), blob1,
                                                              "in-place extract"))
    # desync's failing extracts: an index blob1.store cannot satisfy, an empty store
    for sub, index, store in (("corrupted-index-fails", cd / "blob1_corrupted_index.caibx",
                               cd / "blob1.store"),
                              ("empty-store-fails", cd / "blob1.caibx", cd / "empty.store")):
        outdir = work / f"{sub}.d"
        outdir.mkdir()
        ex = ctx.run.impl_run("extract", "-s", store, index, outdir / "out")
        c.expect(sub, error_problem(ex) or left_behind(outdir))


def _make_vs_desync(ctx: Context, c: Checks, work: Path, sub: str, blob: Path, index: Path,
                    kib: str, store_ref: Path | None) -> None:
    want = index.read_bytes()
    store = work / f"{sub}.store"
    store.mkdir()
    idx = work / f"{sub}.caibx"
    made = ctx.run.impl_run("make", "-s", store, "-m", kib, idx, blob)
    if made.rc != 0 or not idx.exists():
        c.fail(sub, made.why() if made.rc else "no index written")
        c.skip(f"{sub}:store", "not run: make failed")
        return
    got = idx.read_bytes()
    flags = struct.unpack_from("<Q", got, FLAGS_OFFSET)[0] if len(got) >= 24 else None
    desync_flags = struct.unpack_from("<Q", want, FLAGS_OFFSET)[0]
    problem = compare_index(got, want, ignore_flags=True)
    if not problem and flags != CASYNC_FLAGS["sha512-256"] and not (
            ctx.desync_flags and flags == desync_flags):
        problem = f"feature flags {flags:#x}, expected casync's 0xb000000000000000"
    c.expect(sub, problem, f"identical except flags: desync wrote {desync_flags:#018x}, "
             f"impl wrote {flags:#018x}" if flags is not None else "")
    parsed = parse_index(want)
    if store_ref is not None:
        have, ref = store_ids(store), store_ids(store_ref)
        c.expect(f"{sub}:store", None if have == ref else
                 f"store has {len(have)} chunks, desync's store has {len(ref)}")
    else:
        c.expect(f"{sub}:store", verify_store(store, parsed, "sha512-256"))


def peer_make(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    _make_vs_desync(ctx, c, work, "blob1", cd / "blob1", cd / "blob1.caibx", "2:8:32",
                    cd / "blob1.store")
    _make_vs_desync(ctx, c, work, "blob2", cd / "blob2", cd / "blob2.caibx", "2:8:32",
                    cd / "blob2.store")
    _make_vs_desync(ctx, c, work, "chunker.input", td / "chunker.input", td / "chunker.index",
                    "16:64:256", None)


def _chunk_lines(proc: Proc) -> list[tuple[int, int, str]] | str:
    try:
        rows = []
        for line in proc.stdout.decode().splitlines():
            start, size, cid = line.split()
            rows.append((int(start), int(size), cid))
        return rows
    except ValueError:
        return f"cannot parse chunk output line: {proc.stdout[:200]!r}"


def peer_chunk(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    want = list(parse_index((td / "chunker.index").read_bytes()).chunks)
    proc = ctx.run.impl_run("chunk", td / "chunker.input")
    rows = _chunk_lines(proc) if proc.rc == 0 else proc.why()
    c.expect("chunker.input", rows if isinstance(rows, str) else
             (None if rows == want else f"got {len(rows)} chunks {rows[:2]}…, want {len(want)} "
              f"starting {want[:2]}"), "the 20 chunks of TestChunkerLargeFile")
    # Starting at a chunk boundary gives the index's remaining chunks (casync's chunker
    # restarts after every cut); desync prints absolute offsets.
    start = want[5][0]
    proc = ctx.run.impl_run("chunk", "-S", str(start), td / "chunker.input")
    rows = _chunk_lines(proc) if proc.rc == 0 else proc.why()
    c.expect("start-at-boundary", rows if isinstance(rows, str) else
             (None if rows == want[5:] else f"got {rows[:2]}…, want {want[5:7]}…"))


def peer_list(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    want = parse_index((cd / "blob1.caibx").read_bytes()).ids
    proc = ctx.run.impl_run("list-chunks", cd / "blob1.caibx")
    got = proc.stdout.decode(errors="replace").split()
    c.expect("blob1", success_problem(proc) or
             (None if got == want else f"{len(got)} ids, want the {len(want)} ids in index order"))
    # testdata/index.caibx: 3 chunks whose blob is not included (TestIndexLoad)
    want = ["437884da", "985462e6", "fadff4b3"]
    proc = ctx.run.impl_run("list-chunks", td / "index.caibx")
    got = proc.stdout.decode(errors="replace").split()
    c.expect("index.caibx", success_problem(proc) or
             (None if [g[:8] for g in got] == want and all(len(g) == 64 for g in got)
              else f"got {got}, want 3 ids starting {want}"))


def peer_info(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    proc = ctx.run.impl_run("info", "-s", cd / "blob1.store", cd / "blob1.caibx")
    problem = success_problem(proc)
    want = {"total": 161, "unique": 131, "in-store": 131, "size": 2097152,
            "chunk-size-min": 2048, "chunk-size-avg": 8192, "chunk-size-max": 32768}
    if not problem:
        try:
            info = json.loads(proc.stdout)
            wrong = {k: info.get(k) for k, v in want.items() if info.get(k) != v}
            problem = f"wrong fields {wrong}, want {want}" if wrong else None
        except ValueError as exc:
            problem = f"output is not JSON: {exc}"
    c.expect("json", problem)
    proc = ctx.run.impl_run("info", "-f", "plain", "-s", cd / "blob1.store", cd / "blob1.caibx")
    problem = success_problem(proc)
    if not problem:
        lines = set(proc.stdout.decode(errors="replace").splitlines())
        need = ["Blob size: 2097152", "Total chunks: 161", "Unique chunks: 131",
                "Chunks in store: 131", "Chunk size min: 2048", "Chunk size avg: 8192",
                "Chunk size max: 32768"]
        lacking = [n for n in need if n not in lines]
        problem = f"plain output lacks {lacking}" if lacking else None
    c.expect("plain", problem)


def peer_verify_index(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    proc = ctx.run.impl_run("verify-index", cd / "blob1.caibx", cd / "blob1")
    c.expect("blob1", success_problem(proc))
    proc = ctx.run.impl_run("verify-index", cd / "blob2.caibx", cd / "blob2_corrupted")
    c.expect("blob2-corrupted-fails", error_problem(proc))


def peer_cat(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    blob1 = (cd / "blob1").read_bytes()
    store, index = cd / "blob1.store", cd / "blob1.caibx"
    proc = ctx.run.impl_run("cat", "-s", store, index)
    c.expect("whole", success_problem(proc) or compare_bytes(proc.stdout, blob1, "cat output"))
    proc = ctx.run.impl_run("cat", "-s", store, "-o", "1024", "-l", "2048", index)
    c.expect("range", success_problem(proc) or
             compare_bytes(proc.stdout, blob1[1024:3072], "cat -o 1024 -l 2048"))
    out = work / "cat.out"
    proc = ctx.run.impl_run("cat", "-s", store, "-o", "1000000", index, out)
    c.expect("offset-to-file", success_problem(proc) or
             (compare_bytes(out.read_bytes(), blob1[1000000:], "cat -o 1000000 OUT")
              if out.exists() else "no output file"))


def peer_inspect(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    for sub, opts, ref in (("store", ["-s", cd / "blob2.store"], "blob2_chunks_info.json"),
                           ("cache", ["-s", cd / "blob2.cache"], "blob2_chunks_info_missing.json"),
                           ("no-store", [], "blob2_chunks_info_no_store.json")):
        proc = ctx.run.impl_run("inspect-chunks", *opts, cd / "blob2.caibx")
        problem = success_problem(proc)
        if not problem:
            try:
                got = json.loads(proc.stdout)
                want = json.loads((cd / ref).read_bytes())
                problem = None if got == want else f"JSON differs from {ref}"
            except ValueError as exc:
                problem = f"output is not JSON: {exc}"
        c.expect(sub, problem)


def _copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def peer_store_ops(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    run = ctx.run
    index1 = parse_index((cd / "blob1.caibx").read_bytes())
    # chop: blob1 into a new store
    store = work / "chop.store"
    store.mkdir()
    proc = run.impl_run("chop", "-s", store, cd / "blob1.caibx", cd / "blob1")
    c.expect("chop", success_problem(proc) or verify_store(store, index1, "sha512-256"))
    # cache: fill a cache from blob1.store
    cache = work / "cache"
    cache.mkdir()
    proc = run.impl_run("cache", "-s", cd / "blob1.store", "-c", cache, cd / "blob1.caibx")
    c.expect("cache", success_problem(proc) or verify_store(cache, index1, "sha512-256"))
    # prune: blob1.store + blob2.store, keep blob1's chunks only
    both = _copy_store(cd / "blob1.store", work / "prune.store")
    shutil.copytree(cd / "blob2.store", both, dirs_exist_ok=True)
    proc = run.impl_run("prune", "-s", both, "-y", cd / "blob1.caibx")
    c.expect("prune", success_problem(proc) or verify_store(both, index1, "sha512-256"))
    # verify: a clean store passes; -r removes an invalid chunk and keeps the others
    proc = run.impl_run("verify", "-s", cd / "blob1.store")
    c.expect("verify-clean", success_problem(proc))
    bad = _copy_store(cd / "blob1.store", work / "verify.store")
    ids = store_ids(bad)
    victim, donor = ids[0], ids[1]
    shutil.copyfile(bad / donor[:4] / f"{donor}.cacnk", bad / victim[:4] / f"{victim}.cacnk")
    proc = run.impl_run("verify", "-s", bad)
    report = proc.stdout.decode(errors="replace") + proc.stderr
    c.expect("verify-reports", None if victim in report and
             (bad / victim[:4] / f"{victim}.cacnk").exists()
             else f"invalid chunk {victim} not reported (or removed without -r): {proc.why()}")
    proc = run.impl_run("verify", "-s", bad, "-r")
    left = set(store_ids(bad))
    c.expect("verify-repair", success_problem(proc) or
             (None if left == set(ids) - {victim} else
              f"after -r the store has {len(left)} chunks, want {len(ids) - 1} (victim removed)"))


PEER_TASKS = (
    ("extract", ["blob1", "blob2", "two-stores", "with-cache", "in-place",
                 "corrupted-index-fails", "empty-store-fails"], peer_extract),
    ("make", ["blob1", "blob1:store", "blob2", "blob2:store", "chunker.input",
              "chunker.input:store"], peer_make),
    ("chunk", ["chunker.input", "start-at-boundary"], peer_chunk),
    ("list-chunks", ["blob1", "index.caibx"], peer_list),
    ("info", ["json", "plain"], peer_info),
    ("verify-index", ["blob1", "blob2-corrupted-fails"], peer_verify_index),
    ("cat", ["whole", "range", "offset-to-file"], peer_cat),
    ("inspect-chunks", ["store", "cache", "no-store"], peer_inspect),
    ("store-ops", ["chop", "cache", "prune", "verify-clean", "verify-reports", "verify-repair"],
     peer_store_ops),
)


# --- corrupted indexes and bad input ------------------------------------------------------------

def _items(data: bytes) -> tuple[bytes, list[tuple[int, bytes]], bytes]:
    head, n = data[:64], (len(data) - 64 - 40) // 40
    items = [(struct.unpack_from("<Q", data, 64 + 40 * i)[0], data[64 + 40 * i + 8:64 + 40 * i + 40])
             for i in range(n)]
    return head, items, data[-40:]


def _rebuild(head: bytes, items: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<Q", off) + cid for off, cid in items)
    tail = struct.pack("<5Q", 0, 0, 48, 16 + 40 * len(items) + 40, 0x4B4F050E5549ECD1)
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


# name -> (mutation, strict): strict ones are casync's rules that desync does not enforce.
CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    "empty-file": (lambda d: b"", False),
    "truncated-header": (lambda d: d[:30], False),
    "truncated-mid-item": (lambda d: d[:64 + 40 * 3 + 20], False),
    "truncated-no-tail": (lambda d: d[:-40], False),
    "truncated-mid-tail": (lambda d: d[:-12], False),
    "bad-magic": (lambda d: _flip(d, 8), False),
    "bad-table-magic": (lambda d: _flip(d, 56), False),
    "garbled-tail-marker": (lambda d: _flip(d, len(d) - 1), False),
    "garbled-tail-zero-fill": (lambda d: _flip(d, len(d) - 32), False),
    "chunk-over-max": (_over_max, False),
    "offsets-not-increasing": (_swap_offsets, False),
    "trailing-bytes": (lambda d: d + b"trailing garbage", True),
    "wrong-tail-size": (_tail_size, True),
}


def corrupt_task(name: str, mutate: Callable[[bytes], bytes], strict: bool) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        if strict and not ctx.strict:
            c.skip("", "casync-strict index check (desync tolerates it); --no-strict given")
            return
        base = golden_index_path(ERROR_CASE)
        store = golden_store_path(ERROR_CASE)
        if not base.exists() or not store.is_dir():
            raise Prereq(f"golden fixture {ERROR_CASE} missing; run make fixtures")
        bad = work / "bad.caibx"
        bad.write_bytes(mutate(base.read_bytes()))
        outdir = work / "outdir"
        outdir.mkdir()
        proc = ctx.run.impl_run("extract", "-s", store, bad, outdir / "out")
        c.expect("", error_problem(proc) or left_behind(outdir))

    return Task(f"corrupt-index:{name}", [""], fn)


def _error_case(ctx: Context, work: Path) -> tuple[Path, Path, bytes]:
    index, store = golden_index_path(ERROR_CASE), golden_store_path(ERROR_CASE)
    if not index.exists() or not store.is_dir():
        raise Prereq(f"golden fixture {ERROR_CASE} missing; run make fixtures")
    case = next(c for c, _ in load_cases() if c.name == ERROR_CASE)
    blob = work / "blob"
    blob.write_bytes(generate_blob(case))
    return index, _copy_store(store, work / "store"), blob.read_bytes()


def bad_input_task(name: str, body: Callable[[Context, Path], str | None]) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        c.expect("", body(ctx, work))

    return Task(f"bad-input:{name}", [""], fn)


def _fails_leaving_nothing(proc: Proc, outdir: Path) -> str | None:
    return error_problem(proc) or left_behind(outdir)


def _outdir(work: Path) -> Path:
    d = work / "outdir"
    d.mkdir()
    return d


def bad_make_missing_input(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", store, out / "x.caibx", work / "no-such-file"), out)


def bad_make_store_is_file(ctx: Context, work: Path) -> str | None:
    out = _outdir(work)
    (work / "file").write_bytes(b"not a store")
    (work / "blob").write_bytes(blobs.random_blob(100_000, 1))
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", work / "file", out / "x.caibx", work / "blob"), out)


def bad_make_min_gt_avg(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    (work / "blob").write_bytes(blobs.random_blob(100_000, 2))
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", store, "-m", "64:16:256", out / "x.caibx", work / "blob"),
        out)


def bad_make_unwritable_index(ctx: Context, work: Path) -> str | None:
    (work / "blob").write_bytes(blobs.random_blob(10_000, 3))
    (work / "plainfile").write_bytes(b"")
    # A parent that is a regular file cannot be written into, even by root.
    return error_problem(ctx.run.impl_run("make", work / "plainfile" / "x.caibx", work / "blob"))


def bad_extract_missing_index(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    return _fails_leaving_nothing(
        ctx.run.impl_run("extract", "-s", store, work / "no-such.caibx", out / "out"), out)


def bad_extract_store_is_file(ctx: Context, work: Path) -> str | None:
    index, _, _ = _error_case(ctx, work)
    out = _outdir(work)
    (work / "file").write_bytes(b"not a store")
    return _fails_leaving_nothing(
        ctx.run.impl_run("extract", "-s", work / "file", index, out / "out"), out)


def bad_extract_unwritable_dir(ctx: Context, work: Path) -> str | None:
    index, store, _ = _error_case(ctx, work)
    (work / "plainfile").write_bytes(b"")
    if os.geteuid() != 0:
        ro = work / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            problem = _fails_leaving_nothing(
                ctx.run.impl_run("extract", "-s", store, index, ro / "out"), ro)
        finally:
            ro.chmod(0o755)
        if problem:
            return f"read-only directory: {problem}"
    return error_problem(ctx.run.impl_run("extract", "-s", store, index,
                                          work / "plainfile" / "out"))


def _damaged_store(ctx: Context, work: Path, damage: Callable[[Path, list[str]], None]
                   ) -> str | None:
    index, store, _ = _error_case(ctx, work)
    ids = store_ids(store)
    damage(store, ids)
    out = _outdir(work)
    return _fails_leaving_nothing(ctx.run.impl_run("extract", "-s", store, index, out / "out"),
                                  out)


def _chunk_path(store: Path, cid: str) -> Path:
    return store / cid[:4] / f"{cid}.cacnk"


def bad_missing_chunk(ctx: Context, work: Path) -> str | None:
    return _damaged_store(ctx, work, lambda s, ids: _chunk_path(s, ids[len(ids) // 2]).unlink())


def bad_chunk_mismatch(ctx: Context, work: Path) -> str | None:
    def damage(s: Path, ids: list[str]) -> None:
        shutil.copyfile(_chunk_path(s, ids[0]), _chunk_path(s, ids[1]))
    return _damaged_store(ctx, work, damage)


def bad_chunk_not_zstd(ctx: Context, work: Path) -> str | None:
    return _damaged_store(ctx, work, lambda s, ids: _chunk_path(s, ids[2]).write_bytes(
        b"this is not a zstd frame\n" * 40))


def bad_chunk_empty_file(ctx: Context, work: Path) -> str | None:
    return _damaged_store(ctx, work, lambda s, ids: _chunk_path(s, ids[3]).write_bytes(b""))


BAD_INPUTS: tuple[tuple[str, Callable[[Context, Path], str | None]], ...] = (
    ("make-missing-input", bad_make_missing_input),
    ("make-store-is-a-file", bad_make_store_is_file),
    ("make-min-greater-than-avg", bad_make_min_gt_avg),
    ("make-index-dir-unwritable", bad_make_unwritable_index),
    ("extract-missing-index", bad_extract_missing_index),
    ("extract-store-is-a-file", bad_extract_store_is_file),
    ("extract-output-dir-unwritable", bad_extract_unwritable_dir),
    ("extract-missing-chunk", bad_missing_chunk),
    ("extract-chunk-content-mismatch", bad_chunk_mismatch),
    ("extract-chunk-not-zstd", bad_chunk_not_zstd),
    ("extract-chunk-empty-file", bad_chunk_empty_file),
)


# --- planning and running ----------------------------------------------------------------------

def plan(*, live: bool = False, live_count: int = 6, live_seed: int = 0,
         manifest: Path = MANIFEST) -> list[Task]:
    tasks: list[Task] = []
    if manifest.exists():
        tasks += [golden_task(case, entry) for case, entry in load_cases(manifest)]
    else:
        def missing(ctx: Context, c: Checks, work: Path) -> None:
            c.fail("", f"{manifest} not found: run `make fixtures`")
        tasks.append(Task("golden:manifest", [""], missing))
    tasks += [peer_task(name, subs, body) for name, subs, body in PEER_TASKS]
    tasks += [corrupt_task(name, fn, strict) for name, (fn, strict) in CORRUPTIONS.items()]
    tasks += [bad_input_task(name, body) for name, body in BAD_INPUTS]
    tasks += catar_cases.tasks(Task)
    if live:
        tasks += [live_task(live_seed, n) for n in range(live_count)]
    return tasks


def check_names(task: Task) -> list[str]:
    return [f"{task.name}:{s}" if s else task.name for s in task.subs]


def matches(name: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    for p in patterns:
        if any(ch in p for ch in "*?["):
            if fnmatch.fnmatchcase(name, p):
                return True
        elif p in name:
            return True
    return False


def execute(task: Task, ctx: Context, selected: set[str]) -> list[Result]:
    checks = Checks(task.name, task.subs, selected)
    work = Path(tempfile.mkdtemp(prefix="t-", dir=ctx.tmp))
    started = time.monotonic()
    why = "not run: an earlier step of this task failed"
    try:
        task.fn(ctx, checks, work)
    except Prereq as exc:
        for sub in task.subs:
            checks.fail(sub, str(exc))
    except Exception as exc:  # a bug in the runner or a wildly broken impl: report, go on
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        for sub in task.subs:
            checks.fail(sub, f"runner error: {exc!r}{where}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = checks.finish(why)
    elapsed = time.monotonic() - started
    for r in results:
        r.seconds = elapsed / max(1, len(results))
    return results


def write_junit(path: Path, results: list[Result], impl: str) -> None:
    suite = ET.Element("testsuite", name="desync-ref-conformance", tests=str(len(results)),
                       failures=str(sum(r.status == FAIL for r in results)),
                       skipped=str(sum(r.status == SKIP for r in results)))
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="impl", value=impl)
    for r in results:
        group, _, rest = r.name.partition(":")
        tc = ET.SubElement(suite, "testcase", classname=f"conformance.{group}", name=rest or group,
                           time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            ET.SubElement(tc, "failure", message=r.detail[:500]).text = r.detail
        elif r.status == SKIP:
            ET.SubElement(tc, "skipped", message=r.detail)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def find_casync(option: str | None) -> str | None:
    if option == "none":
        return None
    if option:
        return option if Path(option).exists() or shutil.which(option) else None
    return shutil.which("casync")


def run_all(impl: Sequence[str], *, casync: str | None, peer: Path | None, patterns: Sequence[str] = (),
            live: bool = False, live_count: int = 6, live_seed: int = 0, strict: bool = True,
            jobs: int = 0, timeout: float = DEFAULT_TIMEOUT, only: set[str] | None = None,
            desync_flags: bool = False,
            on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the checks matching ``patterns`` (and named in ``only``, if given); returns
    their results in plan order."""
    tasks = plan(live=live, live_count=live_count, live_seed=live_seed)
    selected = {n for t in tasks for n in check_names(t)
                if matches(n, patterns) and (only is None or n in only)}
    tasks = [t for t in tasks if any(n in selected for n in check_names(t))]
    jobs = jobs or max(2, os.cpu_count() or 2)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="desync-ref-conformance-") as tmp:
        ALIASES.update({tmp: "$TMP", str(REPO) + "/": ""})
        if peer is not None:
            ALIASES[str(peer)] = "$PEER"
        ctx = Context(Runner(list(impl), casync, timeout), peer, strict, Path(tmp),
                      desync_flags=desync_flags)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(execute, t, ctx, selected) for t in tasks]
            for fut in futures:
                for r in fut.result():
                    results.append(r)
                    if on_result:
                        on_result(r)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="desync/casync conformance runner")
    parser.add_argument("--impl", default="desync-ref",
                        help='command of the tool under test, e.g. "python -m desync_ref"')
    parser.add_argument("--casync", help="casync binary (default: from PATH; 'none' to disable)")
    parser.add_argument("--peer-fixtures", type=Path, default=DEFAULT_PEER,
                        help=f"desync's test data (default {DEFAULT_PEER})")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only checks whose name contains PATTERN (or matches a glob); "
                             "repeatable")
    parser.add_argument("--live", action="store_true",
                        help="also compare with casync run live on fresh random inputs")
    parser.add_argument("--live-count", type=int, default=6)
    parser.add_argument("--live-seed", type=int, help="seed of the live inputs (default: random)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="skip casync-strict index checks that desync itself does not make")
    parser.add_argument("--desync-flags", action="store_true",
                        help="accept desync's index feature flags (casync's without "
                             "EXCLUDE_FILE, e.g. 0xa0.. for 0xb0..) where casync's are expected")
    parser.add_argument("-j", "--jobs", type=int, default=0, help="parallel tasks (default: CPUs)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds per command")
    parser.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only FAIL lines")
    parser.add_argument("--list", action="store_true", help="list the check names and exit")
    args = parser.parse_args(argv)

    if args.list:
        for t in plan(live=args.live, live_count=args.live_count, live_seed=args.live_seed or 0):
            for n in check_names(t):
                if matches(n, args.patterns):
                    print(n)
        return 0
    impl = shlex.split(args.impl)
    casync = find_casync(args.casync)
    live_seed = args.live_seed if args.live_seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"impl: {shlex.join(impl)}")
    print(f"casync: {casync or 'not installed'}; peer fixtures: {args.peer_fixtures}"
          + (f"; live seed {live_seed}" if args.live else ""))
    sys.stdout.flush()

    def show(r: Result) -> None:
        if r.status == PASS and not args.quiet:
            print(f"PASS {r.name}" + (f" ({r.detail})" if r.detail else ""))
        elif r.status == SKIP and not args.quiet:
            print(f"SKIP {r.name}: {r.detail}")
        elif r.status == FAIL:
            print(f"FAIL {r.name}: {r.detail}")
        sys.stdout.flush()

    started = time.monotonic()
    results = run_all(impl, casync=casync, peer=args.peer_fixtures, patterns=args.patterns,
                      live=args.live, live_count=args.live_count, live_seed=live_seed,
                      strict=args.strict, jobs=args.jobs, timeout=args.timeout,
                      desync_flags=args.desync_flags, on_result=show)
    if args.junit:
        write_junit(args.junit, results, args.impl)
    passed = sum(r.status == PASS for r in results)
    failed = sum(r.status == FAIL for r in results)
    skipped = sum(r.status == SKIP for r in results)
    print(f"({time.monotonic() - started:.1f}s)")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
