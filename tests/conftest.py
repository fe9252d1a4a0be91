"""Shared fixtures: the real casync as oracle, the CLI as a subprocess, peer fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEER_FIXTURES = ROOT / "fixtures" / "desync"  # desync's own test data, see its README


@pytest.fixture(scope="session")
def casync() -> str:
    path = shutil.which("casync")
    if path is None:
        pytest.skip("casync is not installed (Debian package 'casync')")
    return path


@pytest.fixture(scope="session")
def peer() -> Path:
    if not PEER_FIXTURES.exists():
        pytest.skip(f"desync peer fixtures not found at {PEER_FIXTURES}")
    return PEER_FIXTURES


def run_cli(args: Sequence[str | os.PathLike[str]], *, input: bytes | None = None,
            check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m desync_ref`` and return its result; ``check`` demands exit 0."""
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], input=input,
                          capture_output=True, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def assert_clean_failure(proc: subprocess.CompletedProcess[bytes]) -> str:
    """A refused input: non-zero exit, exactly one line on stderr, no traceback."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, "expected a failure"
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err
