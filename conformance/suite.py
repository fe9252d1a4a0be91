"""The whole suite: which tasks there are (``plan``) and running a selection of their
checks in parallel (``run_all``). ``conformance.cli`` and ``test_conformance.py`` use it.
"""

from __future__ import annotations

import concurrent.futures
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from conformance import bad_input_cases, catar_cases, corrupt_index_cases, peer_cases
from conformance.framework import (
    ALIASES,
    DEFAULT_TIMEOUT,
    Checks,
    Context,
    Result,
    Runner,
    Task,
    check_names,
    execute,
    matches,
    require_components_from_env,
)
from conformance.golden_cases import golden_task
from conformance.live_cases import live_task
from fixtures.cases import MANIFEST, load_cases

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEER = REPO / "fixtures" / "desync"


def plan(*, live: bool = False, live_count: int = 6, live_seed: int = 0,
         manifest: Path = MANIFEST) -> list[Task]:
    """Every task, in report order: golden, peer, corrupt-index, bad-input, catar, live."""
    tasks: list[Task] = []
    if manifest.exists():
        tasks += [golden_task(case, entry) for case, entry in load_cases(manifest)]
    else:
        def missing(ctx: Context, c: Checks, work: Path) -> None:
            c.fail("", f"{manifest} not found: run `make fixtures`")
        tasks.append(Task("golden:manifest", [""], missing))
    tasks += peer_cases.tasks()
    tasks += corrupt_index_cases.tasks()
    tasks += bad_input_cases.tasks()
    tasks += catar_cases.tasks()
    if live:
        tasks += [live_task(live_seed, n) for n in range(live_count)]
    return tasks


def run_all(impl: Sequence[str], *, casync: str | None, peer: Path | None,
            patterns: Sequence[str] = (), live: bool = False, live_count: int = 6,
            live_seed: int = 0, strict: bool = True, jobs: int = 0,
            timeout: float = DEFAULT_TIMEOUT, only: set[str] | None = None,
            desync_flags: bool = False, require: bool | None = None,
            on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the checks matching ``patterns`` (and named in ``only``, if given); returns
    their results in plan order. ``require`` (default: ``DESYNC_REF_REQUIRE_COMPONENTS``)
    turns the skips for a missing casync, fixtures or zstandard into failures."""
    tasks = plan(live=live, live_count=live_count, live_seed=live_seed)
    selected = {n for t in tasks for n in check_names(t)
                if matches(n, patterns) and (only is None or n in only)}
    tasks = [t for t in tasks if any(n in selected for n in check_names(t))]
    jobs = jobs or max(2, os.cpu_count() or 2)
    if require is None:
        require = require_components_from_env()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="desync-ref-conformance-") as tmp:
        ALIASES.update({tmp: "$TMP", str(REPO) + "/": ""})
        if peer is not None:
            ALIASES[str(peer)] = "$PEER"
        ctx = Context(Runner(list(impl), casync, timeout), peer, strict, Path(tmp),
                      desync_flags=desync_flags, require=require)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(execute, t, ctx, selected) for t in tasks]
            for fut in futures:
                for r in fut.result():
                    results.append(r)
                    if on_result:
                        on_result(r)
    return results
