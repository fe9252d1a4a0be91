"""Self-tests of the conformance checks: fake implementations that must not pass.

* ``selftest/nope.py`` fails every command with "nope": every check that expects a
  failure (corrupt-index, bad-input, peer ``*-fails``) must still FAIL it, because the
  message names neither the file nor the problem.
* ``selftest/garbage_chunks.py`` is desync-ref with every stored chunk overwritten: the
  ``store`` check must FAIL it, and without ``zstandard`` it must not PASS either.
* Missing components (casync, desync's fixtures) SKIP by hand and FAIL when required.
* The suite never imports ``desync_ref``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conformance.framework import FAIL, PASS, SKIP
from conformance.suite import DEFAULT_PEER, REPO, run_all

SELFTEST = Path(__file__).resolve().parent / "selftest"
NOPE = [sys.executable, str(SELFTEST / "nope.py")]
GARBAGE = [sys.executable, str(SELFTEST / "garbage_chunks.py")]
FAILURE_CHECKS = ["corrupt-index:", "bad-input:", "peer:*-fails"]
SMALL_STORE_CHECK = "golden:cs4k_random_min+1:store"  # two chunks, made in a blink


def test_nope_fails_every_failure_check() -> None:
    results = run_all(NOPE, casync=None, peer=DEFAULT_PEER, patterns=FAILURE_CHECKS)
    assert len(results) == 13 + 11 + 3, [r.name for r in results]
    passed = [r.name for r in results if r.status != FAIL]
    assert not passed, f"a tool that only prints 'nope' did not fail {passed}"
    assert all("does not name the problem" in r.detail for r in results), \
        [r.detail for r in results if "does not name the problem" not in r.detail]


def test_garbage_chunks_fail_the_store_check() -> None:
    [result] = run_all(GARBAGE, casync=None, peer=None, only={SMALL_STORE_CHECK})
    assert result.status == FAIL, result
    assert "not zstd" in result.detail


@pytest.mark.parametrize("require", [False, True])
def test_garbage_chunks_without_zstandard_do_not_pass(
        monkeypatch: pytest.MonkeyPatch, require: bool) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    [result] = run_all(GARBAGE, casync=None, peer=None, only={SMALL_STORE_CHECK},
                       require=require)
    assert result.status == (FAIL if require else SKIP), result
    assert "zstandard is not importable" in result.detail


@pytest.mark.parametrize("require", [False, True])
def test_missing_components(tmp_path: Path, require: bool) -> None:
    checks = {"golden:cs4k_random_min+1:casync-fresh", "golden:cs4k_random_0:impl-extracts-casync",
              "peer:list-chunks:blob1", "catar:peer:gnu-tar", "catar:tree:tar-default"}
    results = run_all(NOPE, casync=None, peer=tmp_path / "absent", only=checks, require=require)
    assert {r.name for r in results} == checks
    for r in results:
        assert r.status == (FAIL if require else SKIP), r
        assert "not installed" in r.detail or "not found" in r.detail, r


def test_suite_does_not_import_desync_ref() -> None:
    code = ("import sys\n"
            "from conformance import cli, suite, test_conformance\n"
            "from fixtures.cases import generate_blob, load_cases, sha256_hex\n"
            "case, entry = next((c, e) for c, e in load_cases() if c.name == 'cs4k_mincut_crafted')\n"
            "assert sha256_hex(generate_blob(case)) == entry['blob_sha256']\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'desync_ref')\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_same_checks_pass_against_desync_ref() -> None:
    """Sanity of the self-tests: the same checks pass against desync-ref itself."""
    results = run_all([sys.executable, "-m", "desync_ref"], casync=None, peer=DEFAULT_PEER,
                      patterns=["corrupt-index:bad-magic", "bad-input:extract-missing-chunk",
                                "peer:extract:empty-store-fails"])
    assert [r.status for r in results] == [PASS] * 3, results
