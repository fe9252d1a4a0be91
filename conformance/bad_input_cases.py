"""Bad input: ``make`` and ``extract`` given a missing file, a store that is a file, bad
chunk sizes, an unwritable destination or a damaged store must fail cleanly and say what
is wrong (desync ``cmd/desync/make.go``, ``extract.go``, ``local.go`` ``NewLocalStore`` /
``GetChunk``, ``chunker.go`` ``NewChunker``, ``errors.go``).

``bad-input:<what>``: non-zero exit, one line on stderr, no traceback, nothing written
where the output would go, and a message naming the problem: the path it could not use
and why ("no such file", "not a directory", "permission denied"), or the chunk (its id)
and what is wrong with it. Paths get neutral names so that a message echoing its
arguments does not pass by accident.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from conformance.corrupt_index_cases import ERROR_CASE
from conformance.framework import Checks, Context, Prereq, Proc, Task
from conformance.oracle import (
    MISSING_WORDS,
    NOT_A_DIRECTORY_WORDS,
    chunk_path,
    fails_saying,
    id_words,
    left_behind,
)
from fixtures import blobs
from fixtures.cases import golden_index_path, golden_store_path, store_ids

# EACCES as strerror / Go print it, and tools that check first
DENIED_WORDS = ("permission", "denied", "read-only", "not writable", "eacces")


def _error_case(work: Path) -> tuple[Path, Path]:
    """The golden index and a private copy of casync's store for it."""
    index, store = golden_index_path(ERROR_CASE), golden_store_path(ERROR_CASE)
    if not index.exists() or not store.is_dir():
        raise Prereq(f"golden fixture {ERROR_CASE} missing; run make fixtures")
    return index, Path(shutil.copytree(store, work / "store"))


def _fails_leaving_nothing(proc: Proc, outdir: Path, *groups: tuple[str, ...] | list[str]
                           ) -> str | None:
    return fails_saying(proc, *groups) or left_behind(outdir)


def _outdir(work: Path) -> Path:
    d = work / "outdir"
    d.mkdir()
    return d


def bad_make_missing_input(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", store, out / "x.caibx", work / "absent-input"), out,
        ("absent-input",), MISSING_WORDS)


def bad_make_store_is_file(ctx: Context, work: Path) -> str | None:
    out = _outdir(work)
    (work / "store-file").write_bytes(b"not a store")
    (work / "blob").write_bytes(blobs.random_blob(100_000, 1))
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", work / "store-file", out / "x.caibx", work / "blob"), out,
        ("store-file",), NOT_A_DIRECTORY_WORDS)


def bad_make_min_gt_avg(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    (work / "blob").write_bytes(blobs.random_blob(100_000, 2))
    # desync: "min chunk size must not be greater than avg"
    return _fails_leaving_nothing(
        ctx.run.impl_run("make", "-s", store, "-m", "64:16:256", out / "x.caibx", work / "blob"),
        out, ("min",), ("avg", "average"))


def bad_make_unwritable_index(ctx: Context, work: Path) -> str | None:
    (work / "blob").write_bytes(blobs.random_blob(10_000, 3))
    (work / "plainfile").write_bytes(b"")
    # A parent that is a regular file cannot be written into, even by root.
    return fails_saying(ctx.run.impl_run("make", work / "plainfile" / "x.caibx", work / "blob"),
                        ("plainfile",), NOT_A_DIRECTORY_WORDS)


def bad_extract_missing_index(ctx: Context, work: Path) -> str | None:
    out, store = _outdir(work), work / "store"
    store.mkdir()
    return _fails_leaving_nothing(
        ctx.run.impl_run("extract", "-s", store, work / "absent.caibx", out / "out"), out,
        ("absent.caibx",), MISSING_WORDS)


def bad_extract_store_is_file(ctx: Context, work: Path) -> str | None:
    index, _ = _error_case(work)
    out = _outdir(work)
    (work / "store-file").write_bytes(b"not a store")
    return _fails_leaving_nothing(
        ctx.run.impl_run("extract", "-s", work / "store-file", index, out / "out"), out,
        ("store-file",), NOT_A_DIRECTORY_WORDS)


def bad_extract_unwritable_dir(ctx: Context, work: Path) -> str | None:
    index, store = _error_case(work)
    (work / "plainfile").write_bytes(b"")
    if os.geteuid() != 0:
        ro = work / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            problem = _fails_leaving_nothing(
                ctx.run.impl_run("extract", "-s", store, index, ro / "out"), ro,
                ("readonly",), DENIED_WORDS)
        finally:
            ro.chmod(0o755)
        if problem:
            return f"read-only directory: {problem}"
    return fails_saying(ctx.run.impl_run("extract", "-s", store, index,
                                         work / "plainfile" / "out"),
                        ("plainfile",), NOT_A_DIRECTORY_WORDS)


def _damaged_store(ctx: Context, work: Path, damage: Callable[[Path, list[str]], str],
                   words: tuple[str, ...]) -> str | None:
    """Extract after ``damage(store, ids)`` broke the chunk whose id it returns: the
    message must name that chunk and say what is wrong with it."""
    index, store = _error_case(work)
    victim = damage(store, store_ids(store))
    out = _outdir(work)
    proc = ctx.run.impl_run("extract", "-s", store, index, out / "out")
    return _fails_leaving_nothing(proc, out, id_words([victim]), words)


def bad_missing_chunk(ctx: Context, work: Path) -> str | None:
    def damage(store: Path, ids: list[str]) -> str:
        victim = ids[len(ids) // 2]
        chunk_path(store, victim).unlink()
        return victim
    return _damaged_store(ctx, work, damage, MISSING_WORDS)


def bad_chunk_mismatch(ctx: Context, work: Path) -> str | None:
    def damage(store: Path, ids: list[str]) -> str:
        shutil.copyfile(chunk_path(store, ids[0]), chunk_path(store, ids[1]))
        return ids[1]
    # desync: "chunk id X does not match its hash Y"
    return _damaged_store(ctx, work, damage, ("hash", "checksum", "digest", "match", "invalid",
                                              "corrupt", "verif"))


def bad_chunk_not_zstd(ctx: Context, work: Path) -> str | None:
    def damage(store: Path, ids: list[str]) -> str:
        chunk_path(store, ids[2]).write_bytes(b"this is not a zstd frame\n" * 40)
        return ids[2]
    # desync: "invalid chunk X: <zstd's error>"
    return _damaged_store(ctx, work, damage, ("zstd", "compress", "invalid", "corrupt", "magic",
                                              "frame", "decod"))


def bad_chunk_empty_file(ctx: Context, work: Path) -> str | None:
    def damage(store: Path, ids: list[str]) -> str:
        chunk_path(store, ids[3]).write_bytes(b"")
        return ids[3]
    return _damaged_store(ctx, work, damage, ("zstd", "compress", "invalid", "corrupt", "empty",
                                              "truncated", "eof", "frame", "decod", "short"))


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


def bad_input_task(name: str, body: Callable[[Context, Path], str | None]) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        c.expect("", body(ctx, work))

    return Task(f"bad-input:{name}", [""], fn)


def tasks() -> list[Task]:
    return [bad_input_task(name, body) for name, body in BAD_INPUTS]
