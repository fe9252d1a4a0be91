"""extract -k resumes: an extract killed half-way (SIGKILL while its store stalls) is run
again with -k; the chunks written before the kill are kept (``chunks-in-place``) and the
result is the blob. Spec: spec/extract.md "In place and devices"."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from desync_ref.formats.index import parse_index
from tests.conftest import run_cli
from tests.httputil import Upstream, wait_for

pytestmark = pytest.mark.compiled_pass_only

SIZE = 4 << 20  # several of the assembler's ~1 MiB pieces


def test_killed_extract_resumes_with_k(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(SIZE)
    (tmp_path / "blob").write_bytes(data)
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    run_cli(["make", "-m", "16:64:256", "-s", store, index, tmp_path / "blob"])
    chunks = parse_index(index.read_bytes()).chunks
    out = tmp_path / "out"
    held = len(chunks) * 3 // 4  # the store answers this many chunk requests, then stalls
    with Upstream(store, hold_from=held) as upstream:
        proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-k", "-n", "1",
                                 "-s", upstream.url, index, out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert upstream.wait_hits(held + 1), "the extract never reached the stalled store"
            first = chunks[0]

            def some_written() -> bool:
                with open(out, "rb") as f:
                    f.seek(first.start)
                    return f.read(first.size) == data[first.start:first.end]

            assert wait_for(some_written, 20), "nothing was written before the stall"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(20) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
    assert out.read_bytes() != data  # interrupted: not complete
    assert out.stat().st_size == SIZE  # -k sized the target first

    stats = json.loads(run_cli(["extract", "-k", "--print-stats", "-s", store, index, out]).stdout)
    assert out.read_bytes() == data
    assert 0 < stats["chunks-in-place"] < stats["chunks-total"], stats
    assert stats["chunks-from-store"] > 0
    assert stats["chunks-in-place"] + stats["chunks-from-store"] + stats["chunks-from-seeds"] \
        == len(chunks)
