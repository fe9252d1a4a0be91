"""``python -m conformance``: the command line of the conformance runner.

    python -m conformance --impl "desync-ref"
    python -m conformance --impl "python -m desync_ref" -k golden: --junit out.xml
    python -m conformance --impl desync --desync-flags --no-strict     # the Go desync

Every check prints one line, ``PASS name``, ``FAIL name: why`` or ``SKIP name: reason``,
and the run ends with ``N passed, N failed, N skipped``; the exit status is 1 if any
check failed or none ran. See ``conformance/README.md`` for the list of checks.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from conformance.framework import (
    DEFAULT_TIMEOUT,
    FAIL,
    PASS,
    REQUIRE_ENV,
    SKIP,
    Result,
    check_names,
    find_casync,
    matches,
    require_components_from_env,
    write_junit,
)
from conformance.suite import DEFAULT_PEER, plan, run_all


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m conformance",
                                description="desync/casync conformance runner")
    p.add_argument("--impl", default="desync-ref",
                   help='command of the tool under test, e.g. "python -m desync_ref"')
    p.add_argument("--casync", help="casync binary (default: from PATH; 'none' to disable)")
    p.add_argument("--peer-fixtures", type=Path, default=DEFAULT_PEER,
                   help=f"desync's test data (default {DEFAULT_PEER})")
    p.add_argument("-k", dest="patterns", action="append", default=[],
                   help="only checks whose name contains PATTERN (or matches a glob); repeatable")
    p.add_argument("--live", action="store_true",
                   help="also compare with casync run live on fresh random inputs")
    p.add_argument("--live-count", type=int, default=6)
    p.add_argument("--live-seed", type=int, help="seed of the live inputs (default: random)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="skip casync-strict index checks that desync itself does not make")
    p.add_argument("--desync-flags", action="store_true",
                   help="accept desync's index feature flags (casync's without EXCLUDE_FILE, "
                        "e.g. 0xa0.. for 0xb0..) where casync's are expected")
    p.add_argument("--require-components", action="store_true",
                   default=require_components_from_env(),
                   help=f"a check that lacks casync, desync's fixtures or zstandard fails "
                        f"instead of skipping (default: on if {REQUIRE_ENV} is set)")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel tasks (default: CPUs)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per command")
    p.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    p.add_argument("-q", "--quiet", action="store_true", help="print only FAIL lines")
    p.add_argument("--list", action="store_true", help="list the check names and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for t in plan(live=args.live, live_count=args.live_count, live_seed=args.live_seed or 0):
            for n in check_names(t):
                if matches(n, args.patterns):
                    print(n)
        return 0
    impl = shlex.split(args.impl)
    casync = find_casync(args.casync)
    live_seed = (args.live_seed if args.live_seed is not None
                 else random.SystemRandom().randrange(1 << 31))
    print(f"impl: {shlex.join(impl)}")
    print(f"casync: {casync or 'not installed'}; peer fixtures: {args.peer_fixtures}"
          + (f"; live seed {live_seed}" if args.live else "")
          + ("; missing components fail" if args.require_components else ""))
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
                      desync_flags=args.desync_flags, require=args.require_components,
                      on_result=show)
    if args.junit:
        write_junit(args.junit, results, args.impl)
    passed = sum(r.status == PASS for r in results)
    failed = sum(r.status == FAIL for r in results)
    skipped = sum(r.status == SKIP for r in results)
    print(f"({time.monotonic() - started:.1f}s)")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not results else 0
