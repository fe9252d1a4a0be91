"""pytest wrapper: every conformance check against ``python -m desync_ref`` is one test.

The runner executes once per session (about a minute on two cores); each parametrized test
then reports its own check. With casync installed the live comparison runs too (fixed seed).
``DESYNC_REF_CONFORMANCE_IMPL`` overrides the tool under test; with
``DESYNC_REF_REQUIRE_COMPONENTS`` set (``make test``, CI) a missing casync or missing
fixtures fail instead of skipping, and ``test_some_check_ran`` fails if nothing ran.
"""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from conformance.framework import FAIL, PASS, SKIP, Result, check_names, find_casync
from conformance.suite import DEFAULT_PEER, plan, run_all

LIVE_SEED = 20240601
LIVE_COUNT = 4
CASYNC = find_casync(os.environ.get("DESYNC_REF_CASYNC"))
IMPL = (shlex.split(os.environ["DESYNC_REF_CONFORMANCE_IMPL"])
        if os.environ.get("DESYNC_REF_CONFORMANCE_IMPL")
        else [sys.executable, "-m", "desync_ref"])
NAMES = [n for t in plan(live=CASYNC is not None, live_count=LIVE_COUNT, live_seed=LIVE_SEED)
         for n in check_names(t)]


@pytest.fixture(scope="session")
def conformance_results(request: pytest.FixtureRequest) -> dict[str, Result]:
    # Run only the checks pytest selected (-k, node ids), all in one parallel pass.
    wanted = {item.callspec.params["check"] for item in request.session.items
              if hasattr(item, "callspec") and "check" in item.callspec.params}
    results = run_all(IMPL, casync=CASYNC, peer=DEFAULT_PEER, live=CASYNC is not None,
                      live_count=LIVE_COUNT, live_seed=LIVE_SEED, only=wanted)
    return {r.name: r for r in results}


@pytest.mark.parametrize("check", NAMES)
def test_conformance(check: str, conformance_results: dict[str, Result]) -> None:
    result = conformance_results.get(check)
    assert result is not None, f"the runner produced no result for {check}"
    if result.status == SKIP:
        pytest.skip(result.detail)
    assert result.status == PASS, result.detail


def test_some_check_ran(conformance_results: dict[str, Result]) -> None:
    """An empty plan, or a run where every check skipped, is a failure, not a green run
    (pytest would otherwise exit 0, or 5 when nothing is collected)."""
    assert NAMES, "the conformance plan has no checks"
    ran = [r for r in conformance_results.values() if r.status in (PASS, FAIL)]
    assert ran, (f"none of the {len(conformance_results)} selected conformance checks ran "
                 "(all skipped, or none selected)")
