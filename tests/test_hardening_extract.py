"""Hardening of extract's writes: short writes are carried on, a failed write (a full disk)
ends the run with the target named, and nothing appears under the final name."""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import parse_index
from desync_ref.operations.extract import extract
from desync_ref.stores.local import LocalStore


def _made(tmp: Path) -> tuple[Path, Path, bytes]:
    data = random.Random(5).randbytes(300_000) + bytes(100_000) + random.Random(6).randbytes(50_000)
    (tmp / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp / "s", "-m", "1:4:16", tmp / "x.caibx", tmp / "blob"])
    return tmp / "x.caibx", tmp / "s", data


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((".out", "out")))


@pytest.mark.parametrize("workers", [1, 3])
def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    index, store, data = _made(tmp_path)
    real = os.pwrite
    calls = []

    def short(fd: int, buf: bytes, offset: int) -> int:
        calls.append(len(buf))
        return real(fd, memoryview(buf)[: max(1, len(buf) // 3)], offset)

    monkeypatch.setattr(os, "pwrite", short)
    extract(parse_index(index.read_bytes()), LocalStore(store), tmp_path / "out", workers=workers)
    monkeypatch.undo()
    assert len(calls) > len(parse_index(index.read_bytes()).chunks)  # writes were cut short
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.parametrize("failure", ["enospc", "no-progress"])
def test_failed_write_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    index, store, _ = _made(tmp_path)
    real = os.pwrite
    budget = [100_000]

    def filling(fd: int, buf: bytes, offset: int) -> int:
        if budget[0] <= 0:
            if failure == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return 0
        n = real(fd, memoryview(buf)[: budget[0]], offset)
        budget[0] -= n
        return n

    monkeypatch.setattr(os, "pwrite", filling)
    with pytest.raises(DesyncRefError, match=re.escape(f"cannot write {tmp_path / 'out'}: ")):
        extract(parse_index(index.read_bytes()), LocalStore(store), tmp_path / "out")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def _file_size_limit(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_cli_write_failure_is_one_line_naming_the_target(tmp_path: Path) -> None:
    index, store, _ = _made(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "desync_ref", "extract", "-s", str(store), str(index),
                           str(tmp_path / "out")], capture_output=True, timeout=300,
                          preexec_fn=lambda: _file_size_limit(200_000))
    err = assert_clean_failure(proc)
    assert f"cannot write {tmp_path / 'out'}: File too large" in err
    assert _leftovers(tmp_path) == []
