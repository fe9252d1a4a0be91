"""Live cases (``--live``): casync run on the spot on fresh random inputs, the impl
compared with it as for the golden cases (spec/chunker.md, spec/index.md).

``live:<n>:<kind>-<size>-<min>_<avg>_<max>k:…``: random kind, size (edge sizes or up to
1.5 MiB), chunk sizes (avg 4-128 KiB, min avg/1..avg/8, max avg..8 avg), 20 % SHA-256.
"""

from __future__ import annotations

import random
from pathlib import Path

from conformance.framework import Checks, Context, Prereq, Task
from conformance.oracle import compare_file, compare_index, success_problem, verify_store
from fixtures import blobs
from fixtures.cases import Case, ChunkSet, generate_blob, parse_index

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
                c.missing(sub, "casync not installed")
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
                        (compare_index(idx.read_bytes(), golden, desync_flags=ctx.desync_flags)
                         if idx.exists() else "no index written")):
            c.skip("store", "not run: make failed")
            c.skip("casync-extracts-impl", "not run: make failed")
        else:
            c.check("store", lambda: verify_store(store, parse_index(golden), case.digest))
            out = work / "by-casync.out"
            ex = run.casync_run("extract", f"--store={store}", idx, out)
            c.expect("casync-extracts-impl", success_problem(ex) or
                     compare_file(out, blob, "casync's extract"))
        out = work / "from-casync.out"
        ex = run.impl_run("extract", "-s", cstore, cidx, out, digest=case.digest)
        c.expect("impl-extracts-casync",
                 success_problem(ex) or compare_file(out, blob, "extracted blob"))

    return Task(f"live:{n}:{case.name}", list(LIVE_SUBS), fn)
