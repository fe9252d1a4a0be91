"""Peer cases: the impl on desync's own test data (``fixtures/desync``, see its README),
checked as desync's Go tests check desync (``cmd/desync/*_test.go``, ``*_test.go``).

``peer:<command>:<case>``: extract (several stores, a cache, in place, and two that must
fail naming the missing chunk), make (desync's index up to the flags), chunk, list-chunks,
info, verify-index, cat, inspect-chunks, and the store operations chop, cache, prune,
verify.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from conformance.framework import Checks, Context, Task
from conformance.oracle import (
    CASYNC_FLAGS,
    MISSING_WORDS,
    check_chunk_files,
    chunk_lines,
    compare_bytes,
    compare_file,
    compare_index,
    fails_saying,
    id_words,
    index_flags,
    left_behind,
    success_problem,
    verify_store,
)
from fixtures.cases import parse_index, store_ids

PeerBody = Callable[[Context, Checks, Path, Path, Path], None]


def peer_task(name: str, subs: list[str], body: PeerBody) -> Task:
    """A task over desync's fixtures; ``body(ctx, checks, work, testdata, cmd_testdata)``."""
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        if ctx.peer is None or not (ctx.peer / "cmd/desync/testdata/blob1.caibx").exists():
            for sub in subs:
                c.missing(sub, f"peer fixtures not found at {ctx.peer} (--peer-fixtures)")
            return
        body(ctx, c, work, ctx.peer / "testdata", ctx.peer / "cmd/desync/testdata")

    return Task(f"peer:{name}", subs, fn)


def _extract_check(ctx: Context, c: Checks, sub: str, work: Path, index: Path, want: bytes,
                   *opts: str | Path) -> None:
    out = work / f"{sub or 'out'}.out"
    ex = ctx.run.impl_run("extract", *opts, index, out)
    c.expect(sub, success_problem(ex) or compare_file(out, want, "extracted blob"))


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
    index1 = parse_index((cd / "blob1.caibx").read_bytes())

    def cache_problem() -> str | None:
        problem = success_problem(ex) or compare_file(out, blob1, "extracted blob")
        if problem:
            return problem
        nonzero = {cid for start, size, cid in index1.chunks
                   if blob1[start:start + size].count(0) != size}
        have = set(store_ids(cache))
        if not nonzero <= have or not have <= set(index1.ids):
            return (f"cache holds {len(have)} chunks; lacks {len(nonzero - have)} non-zero "
                    f"chunks, has {len(have - set(index1.ids))} foreign ones")
        return check_chunk_files(cache, have, "sha512-256")

    c.check("with-cache", cache_problem)
    # in place: start from blob2's bytes, end with blob1
    out = work / "inplace.out"
    shutil.copyfile(cd / "blob2", out)
    ex = ctx.run.impl_run("extract", "-k", "-s", cd / "blob1.store", cd / "blob1.caibx", out)
    c.expect("in-place", success_problem(ex) or compare_file(out, blob1, "in-place extract"))
    # desync's failing extracts: an index blob1.store cannot satisfy (10 of its chunks are
    # not there), an empty store. The message must name a chunk that is missing.
    for sub, index, store in (("corrupted-index-fails", cd / "blob1_corrupted_index.caibx",
                               cd / "blob1.store"),
                              ("empty-store-fails", cd / "blob1.caibx", cd / "empty.store")):
        absent = set(parse_index(index.read_bytes()).ids) - set(store_ids(store))
        outdir = work / f"{sub}.d"
        outdir.mkdir()
        ex = ctx.run.impl_run("extract", "-s", store, index, outdir / "out")
        c.expect(sub, fails_saying(ex, id_words(absent), MISSING_WORDS) or left_behind(outdir))


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
    flags = index_flags(got)
    desync_flags = index_flags(want)
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
        c.check(f"{sub}:store", lambda: verify_store(store, parsed, "sha512-256"))


def peer_make(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    _make_vs_desync(ctx, c, work, "blob1", cd / "blob1", cd / "blob1.caibx", "2:8:32",
                    cd / "blob1.store")
    _make_vs_desync(ctx, c, work, "blob2", cd / "blob2", cd / "blob2.caibx", "2:8:32",
                    cd / "blob2.store")
    _make_vs_desync(ctx, c, work, "chunker.input", td / "chunker.input", td / "chunker.index",
                    "16:64:256", None)


def peer_chunk(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    want = list(parse_index((td / "chunker.index").read_bytes()).chunks)
    proc = ctx.run.impl_run("chunk", td / "chunker.input")
    rows = chunk_lines(proc) if proc.rc == 0 else proc.why()
    c.expect("chunker.input", rows if isinstance(rows, str) else
             (None if rows == want else f"got {len(rows)} chunks {rows[:2]}…, want {len(want)} "
              f"starting {want[:2]}"), "the 20 chunks of TestChunkerLargeFile")
    # Starting at a chunk boundary gives the index's remaining chunks (casync's chunker
    # restarts after every cut); desync prints absolute offsets.
    start = want[5][0]
    proc = ctx.run.impl_run("chunk", "-S", str(start), td / "chunker.input")
    rows = chunk_lines(proc) if proc.rc == 0 else proc.why()
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
    # blob2_corrupted is 5 bytes shorter than blob2 and has edits: desync says "index size
    # (2097152) does not match file size (2097147)" (verifyindex.go); a tool comparing
    # chunk by chunk would name a chunk that does not match.
    proc = ctx.run.impl_run("verify-index", cd / "blob2.caibx", cd / "blob2_corrupted")
    c.expect("blob2-corrupted-fails",
             fails_saying(proc, ("match", "differ", "size", "corrupt", "invalid")))


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
             compare_file(out, blob1[1000000:], "cat -o 1000000 OUT"))


def peer_inspect(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    cases: list[tuple[str, list[str | Path], str]] = [
        ("store", ["-s", cd / "blob2.store"], "blob2_chunks_info.json"),
        ("cache", ["-s", cd / "blob2.cache"], "blob2_chunks_info_missing.json"),
        ("no-store", [], "blob2_chunks_info_no_store.json")]
    for sub, opts, ref in cases:
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


def peer_store_ops(ctx: Context, c: Checks, work: Path, td: Path, cd: Path) -> None:
    run = ctx.run
    index1 = parse_index((cd / "blob1.caibx").read_bytes())
    # chop: blob1 into a new store
    store = work / "chop.store"
    store.mkdir()
    chop = run.impl_run("chop", "-s", store, cd / "blob1.caibx", cd / "blob1")
    c.check("chop", lambda: success_problem(chop) or verify_store(store, index1, "sha512-256"))
    # cache: fill a cache from blob1.store
    cache = work / "cache"
    cache.mkdir()
    filled = run.impl_run("cache", "-s", cd / "blob1.store", "-c", cache, cd / "blob1.caibx")
    c.check("cache", lambda: success_problem(filled) or verify_store(cache, index1, "sha512-256"))
    # prune: blob1.store + blob2.store, keep blob1's chunks only
    both = work / "prune.store"
    shutil.copytree(cd / "blob1.store", both)
    shutil.copytree(cd / "blob2.store", both, dirs_exist_ok=True)
    pruned = run.impl_run("prune", "-s", both, "-y", cd / "blob1.caibx")
    c.check("prune", lambda: success_problem(pruned) or verify_store(both, index1, "sha512-256"))
    # verify: a clean store passes; -r removes an invalid chunk and keeps the others
    proc = run.impl_run("verify", "-s", cd / "blob1.store")
    c.expect("verify-clean", success_problem(proc))
    bad = work / "verify.store"
    shutil.copytree(cd / "blob1.store", bad)
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


PEER_TASKS: tuple[tuple[str, list[str], PeerBody], ...] = (
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


def tasks() -> list[Task]:
    return [peer_task(name, subs, body) for name, subs, body in PEER_TASKS]
