"""Golden cases: the impl against the indexes and stores casync made for
``fixtures/manifest.json`` (spec/index.md, spec/chunker.md; casync ``casync make`` /
``casync extract``).

Per case, ``golden:<case>:…``: ``make`` (index byte-identical to casync's), ``store`` (the
index's chunks, each a valid zstd frame), ``extract``, ``casync-fresh`` (casync here still
makes the committed index), ``impl-extracts-casync``, ``casync-extracts-impl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.framework import Checks, Context, Prereq, Task
from conformance.oracle import compare_file, compare_index, success_problem, verify_store
from fixtures.cases import (
    Case,
    generate_blob,
    golden_index_path,
    golden_store_path,
    parse_index,
    sha256_hex,
)

GOLDEN_SUBS = ["make", "store", "extract", "casync-fresh", "impl-extracts-casync",
               "casync-extracts-impl"]


def golden_task(case: Case, entry: dict[str, Any]) -> Task:
    def fn(ctx: Context, c: Checks, work: Path) -> None:
        run = ctx.run
        blob = generate_blob(case)
        if sha256_hex(blob) != entry["blob_sha256"]:
            raise Prereq("regenerated blob differs from the manifest's (generator drift in "
                         "fixtures/blobs.py or fixtures/buzhash.py?); rerun make fixtures")
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
            c.check("store", lambda: verify_store(store, golden_index, digest))
            out = work / "impl.out"
            ex = run.impl_run("extract", "-s", store, idx, out, digest=digest)
            c.expect("extract", success_problem(ex) or compare_file(out, blob, "extracted blob"))

        # casync's store: the committed one, else one casync makes now (and casync's index
        # made now must still be the committed golden one)
        cstore: Path | None = golden_store_path(case) if case.store else None
        if run.casync is None:
            c.missing("casync-fresh", "casync not installed")
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
            c.expect("impl-extracts-casync",
                     success_problem(ex) or compare_file(out, blob, "extracted blob"))
        elif run.casync is None:
            c.missing("impl-extracts-casync", "casync not installed and no committed store")
        else:
            c.skip("impl-extracts-casync", "not run: casync-fresh failed")

        if run.casync is None:
            c.missing("casync-extracts-impl", "casync not installed")
        elif made_ok:
            out = work / "by-casync.out"
            ex = run.casync_run("extract", f"--store={store}", idx, out)
            c.expect("casync-extracts-impl",
                     success_problem(ex) or compare_file(out, blob, "casync's extract"))

    # The impl's extract from casync's store is checked where it adds something over the
    # impl's own store: empty and multi-chunk blobs, and the committed-store cases.
    subs = list(GOLDEN_SUBS)
    if not (case.size == 0 or case.size > case.chunks.max or case.store):
        subs.remove("impl-extracts-casync")
    return Task(f"golden:{case.name}", subs, fn)
