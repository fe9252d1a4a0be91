"""catar cases: directory trees through ``tar``, ``tar -i``, ``untar``, ``untar -i`` and
gnu-tar output, and interop with casync both ways (spec/catar.md; casync ``casync make``
/ ``casync extract`` of a directory, desync ``cmd/desync/tar.go`` / ``untar.go``).

``catar:tree:…`` builds ``fixtures/catar/trees.py``'s ``basic`` tree and compares the
impl's archives with casync's (three feature sets), both ways. ``catar:peer:…`` runs the
archives of desync's test data (``testdata/*.catar``, ``cmd/desync/testdata/tree.*``).
"""

from __future__ import annotations

from pathlib import Path

from conformance.framework import Checks, Context, Proc, Task
from fixtures.catar.trees import build

DEFAULT = ["32bit-uids", "nsec-time", "permissions", "symlinks", "device-nodes", "fifos",
           "sockets", "xattrs"]
SETS = {"default": DEFAULT, "best": ["best"], "unix": ["unix"]}


def _with(flags: list[str]) -> list[str]:
    return [f"--with={f}" for f in flags]


def _ran(proc: Proc) -> str | None:
    return None if proc.rc == 0 else proc.why()


def _same(a: Path, b: Path) -> str | None:
    if not a.exists() or not b.exists():
        return f"missing output {a if not a.exists() else b}"
    return None if a.read_bytes() == b.read_bytes() else f"{a.name} and {b.name} differ"


SUBS_TREE = ["tar-default", "tar-best", "tar-unix", "untar", "casync-extracts-ours", "tar-i",
             "untar-i", "casync-extracts-ours-i"]


def tree_task(ctx: Context, c: Checks, work: Path) -> None:
    run = ctx.run
    src = build(work, "basic")
    if run.casync is None:
        for sub in SUBS_TREE:
            c.missing(sub, "casync not installed")
        return
    for name, flags in SETS.items():
        want, got = work / f"{name}.casync.catar", work / f"{name}.ours.catar"
        problem = _ran(run.casync_run("make", *_with(flags), want, src))
        problem = problem or _ran(run.impl_run("tar", *_with(flags), got, src)) or _same(got, want)
        c.expect(f"tar-{name}", problem)
    # untar casync's catar, casync re-archives: same bytes
    want = work / "default.casync.catar"
    problem = _ran(run.impl_run("untar", want, work / "u1"))
    problem = problem or _ran(run.casync_run("make", *_with(DEFAULT), work / "u1.catar", work / "u1"))
    c.expect("untar", problem or _same(work / "u1.catar", want))
    # casync extracts our catar: same tree
    problem = _ran(run.casync_run("extract", *_with(DEFAULT), work / "default.ours.catar", work / "u2"))
    problem = problem or _ran(run.impl_run("tar", work / "u2.catar", work / "u2"))
    c.expect("casync-extracts-ours", problem or _same(work / "u2.catar", want))
    # caidx + store
    problem = _ran(run.casync_run("make", *_with(DEFAULT), f"--store={work / 's1'}", work / "a.caidx", src))
    problem = problem or _ran(run.impl_run("tar", "-i", "-s", work / "s2", work / "b.caidx", src))
    c.expect("tar-i", problem or _same(work / "b.caidx", work / "a.caidx"))
    problem = _ran(run.impl_run("untar", "-i", "-s", work / "s1", work / "a.caidx", work / "u3"))
    problem = problem or _ran(run.impl_run("tar", work / "u3.catar", work / "u3"))
    c.expect("untar-i", problem or _same(work / "u3.catar", want))
    problem = _ran(run.casync_run("extract", *_with(DEFAULT), f"--store={work / 's2'}",
                                  work / "b.caidx", work / "u4"))
    problem = problem or _ran(run.impl_run("tar", work / "u4.catar", work / "u4"))
    c.expect("casync-extracts-ours-i", problem or _same(work / "u4.catar", want))


SUBS_PEER = ["complex-round-trip", "old-casync-archives", "tree-caidx", "gnu-tar"]


def peer_task(ctx: Context, c: Checks, work: Path) -> None:
    if ctx.peer is None or not (ctx.peer / "testdata" / "complex.catar").exists():
        for sub in SUBS_PEER:
            c.missing(sub, f"peer fixtures not found at {ctx.peer} (--peer-fixtures)")
        return
    run, td = ctx.run, ctx.peer / "testdata"
    cd = ctx.peer / "cmd" / "desync" / "testdata"
    problem = _ran(run.impl_run("untar", td / "complex.catar", work / "c"))
    problem = problem or _ran(run.impl_run("tar", work / "c.catar", work / "c"))
    c.expect("complex-round-trip", problem or _same(work / "c.catar", td / "complex.catar"))
    problems = [_ran(run.impl_run("untar", "--no-same-owner", td / f"{n}.catar", work / n))
                for n in ("flat", "nested", "flatdir")]
    c.expect("old-casync-archives", "; ".join(p for p in problems if p) or None)
    c.expect("tree-caidx", _ran(run.impl_run("untar", "-s", cd / "tree.store", "-i",
                                             "--no-same-owner", "--no-same-permissions",
                                             cd / "tree.caidx", work / "t")))
    proc = run.impl_run("untar", "--output-format", "gnu-tar", td / "complex.catar", "-")
    want = (td / "complex.gnu-tar").read_bytes()
    c.expect("gnu-tar", _ran(proc) or (None if proc.stdout == want else "output differs"))


def tasks() -> list[Task]:
    return [Task("catar:tree", SUBS_TREE, tree_task), Task("catar:peer", SUBS_PEER, peer_task)]
