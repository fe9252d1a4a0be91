"""Helpers shared by the kill and concurrency tests: the CLI as a command line, the chunk
ids an index names, and ``verify -s`` of a store through the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import run_cli

from desync_ref.formats.index import parse_index

# Both files draw their random moments and blobs from this seed, so a failure reproduces.
SEED = os.environ.get("DESYNC_REF_CRASH_SEED", "1")


def cli(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "desync_ref", *map(str, args)]


def index_ids(index: Path) -> set[str]:
    return {c.id.hex() for c in parse_index(index.read_bytes()).chunks}


def assert_verifies(store: Path, where: str) -> None:
    """``verify -s STORE`` (the CLI) finds no invalid chunk."""
    proc = run_cli(["verify", "-s", store])
    assert proc.stderr == b"", f"{where}: verify -s {store} found:\n{proc.stderr.decode()}"
