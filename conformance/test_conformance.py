"""pytest wrapper: every conformance check against ``python -m desync_ref`` is one test.

The runner executes once per session (about a minute on two cores); each parametrized test
then reports its own check. With casync installed the live comparison runs too (fixed seed),
and no check is skipped. ``DESYNC_REF_CONFORMANCE_IMPL`` overrides the tool under test.
"""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from conformance import run as runner

LIVE_SEED = 20240601
LIVE_COUNT = 4
CASYNC = runner.find_casync(os.environ.get("DESYNC_REF_CASYNC"))
IMPL = (shlex.split(os.environ["DESYNC_REF_CONFORMANCE_IMPL"])
        if os.environ.get("DESYNC_REF_CONFORMANCE_IMPL")
        else [sys.executable, "-m", "desync_ref"])
PEER = runner.DEFAULT_PEER


def _names() -> list[str]:
    tasks = runner.plan(live=CASYNC is not None, live_count=LIVE_COUNT, live_seed=LIVE_SEED)
    return [n for t in tasks for n in runner.check_names(t)]


@pytest.fixture(scope="session")
def conformance_results(request: pytest.FixtureRequest) -> dict[str, runner.Result]:
    # Run only the checks pytest selected (-k, node ids), all in one parallel pass.
    wanted = {item.callspec.params["check"] for item in request.session.items
              if hasattr(item, "callspec") and "check" in item.callspec.params}
    results = runner.run_all(IMPL, casync=CASYNC, peer=PEER, live=CASYNC is not None,
                             live_count=LIVE_COUNT, live_seed=LIVE_SEED, only=wanted)
    return {r.name: r for r in results}


@pytest.mark.parametrize("check", _names())
def test_conformance(check: str, conformance_results: dict[str, runner.Result]) -> None:
    result = conformance_results.get(check)
    assert result is not None, f"the runner produced no result for {check}"
    if result.status == runner.SKIP:
        pytest.skip(result.detail)
    assert result.status == runner.PASS, result.detail
