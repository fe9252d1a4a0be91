"""Crashes found by fuzzing and not fixed yet, so the CI pass can tell a known one from a new one.

Each entry: (target, exception type name, innermost ``desync_ref`` function) -> the bug, as
written in ``fuzz/crashes/README.md``. Every entry has a strict-xfail regression test in
``tests/test_fuzz_regressions.py``; when a bug is fixed, its regression test starts passing
(XPASS fails the run), the marker and the entry here are removed together.
"""

from __future__ import annotations

import traceback

KNOWN: dict[tuple[str, str, str], str] = {}  # none open


def signature(target: str, exc: BaseException) -> tuple[str, str, str]:
    # Innermost named function of desync_ref (a generator expression names its enclosing one).
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/desync_ref/" in f.filename and not f.name.startswith("<")]
    return (target, type(exc).__name__, frames[-1].name if frames else "?")


def known(target: str, exc: BaseException) -> str | None:
    return KNOWN.get(signature(target, exc))
