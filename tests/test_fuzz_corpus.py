"""The short fuzzing pass for CI: every committed corpus file through every fuzz target, a
few hundred fixed-seed mutants per target, and fuzzed requests against running servers.

``make fuzz`` is the long, coverage-guided run (atheris); this is its replay. Every input
must end in a result or in the library's own error (``fuzz/targets.py`` says which); a
crash already recorded in ``fuzz/known.py`` (each with a strict-xfail test in
``test_fuzz_regressions.py``) is tolerated here, any other fails with its input.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_cli
from httputil import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.known import known, signature  # noqa: E402
from fuzz.mutate import mutate  # noqa: E402
from fuzz.targets import TARGETS, run_one  # noqa: E402

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

CORPUS = ROOT / "fuzz" / "corpus"
ALL_SEEDS = sorted(p for p in CORPUS.glob("*/*") if p.is_file())
MUTANTS = 300
# One input taking this long is a hang (the slowest real seed takes well under a second).
HANG_SECONDS = 10


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check(target: str, data: bytes, label: str, failures: list[str]) -> None:
    try:
        with time_limit(HANG_SECONDS):
            run_one(target, data)
    except Exception as exc:
        if known(target, exc) is None:
            failures.append(f"{label}: {signature(target, exc)}: {str(exc)[:200]} (input {data[:80]!r}"
                            f"{'...' if len(data) > 80 else ''}, {len(data)} bytes)")


def test_corpus_is_small_and_complete() -> None:
    total = sum(p.stat().st_size for p in ALL_SEEDS)
    assert total < 2 * 1024 * 1024, f"seed corpus is {total} bytes"
    for target in TARGETS:
        assert any((CORPUS / target).iterdir()), f"no seeds for {target}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_corpus_replay(target: str) -> None:
    """Every corpus file (of every target: a catar is also a strange index) through ``target``."""
    failures: list[str] = []
    for path in ALL_SEEDS:
        _check(target, path.read_bytes(), str(path.relative_to(CORPUS)), failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutants(target: str) -> None:
    """MUTANTS fixed-seed mutants of the target's own seeds."""
    seeds = [p.read_bytes() for p in sorted((CORPUS / target).iterdir())]
    if target == "untar":
        seeds = [s for s in seeds if len(s) < 8192]  # each restore writes a tree: keep them small
    rng = random.Random(f"desync-fuzz-{target}")
    failures: list[str] = []
    for n in range(MUTANTS):
        data = mutate(rng.choice(seeds), rng.choice(seeds), rng)
        _check(target, data, f"mutant {n}", failures)
    assert not failures, "\n".join(failures)


def test_seeds_reach_results() -> None:
    """The corpus is not all rejects: each target's seeds include inputs that parse."""
    for target in TARGETS:
        ok = 0
        for path in sorted((CORPUS / target).iterdir()):
            try:
                with time_limit(HANG_SECONDS):
                    TARGETS[target](path.read_bytes())
                ok += 1
            except Exception:
                pass
        assert ok, f"no seed of {target} reaches a result"


# --- real requests ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("fuzzsrv")
    (base / "blob").write_bytes(os.urandom(200_000))
    store, indexes = base / "store", base / "indexes"
    indexes.mkdir()
    run_cli(["make", "-m", "16:32:64", "-s", store, indexes / "x.caibx", base / "blob"])
    chunk = next(store.rglob("*.cacnk"))
    with Server("chunk-server", ["-s", store, "-w", "--skip-verify-write=false"]) as cs, Server("index-server", ["-s", indexes, "-w"]) as ix:
        yield {"chunk": cs, "index": ix, "chunk_path": "/" + str(chunk.relative_to(store)),
               "chunk_body": chunk.read_bytes(), "index_body": (indexes / "x.caibx").read_bytes()}


_METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "get", "FOO"])
_PATH_PIECES = st.sampled_from(["/", "a", "0000", ".cacnk", ".caibx", "..", ".", "%2f", "%2e", "%00",
                                "?", "#", "x" * 64, "f" * 64, "%", ";", "//", "\\", "~"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method = draw(_METHODS)
    path = "/" + "".join(draw(st.lists(_PATH_PIECES | st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=8), max_size=8)))
    body = draw(st.binary(max_size=256) | st.sampled_from([b"", b"\x28\xb5\x2f\xfd"]))
    return method, path, body


def _ask(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests(), which=st.sampled_from(["chunk", "index"]), real=st.booleans())
def test_servers_answer_fuzzed_requests(servers: dict[str, object], req: tuple[str, str, bytes],
                                        which: str, real: bool) -> None:
    """Fuzzed methods, paths and bodies (some on a real chunk/index path): each gets a 4xx or
    a 200, never a 5xx or a dropped connection, and the server stays up."""
    method, path, body = req
    if real:
        path = servers["chunk_path"] if which == "chunk" else "/x.caibx"  # type: ignore[assignment]
        if method == "PUT" and len(body) % 2:
            body = servers["chunk_body" if which == "chunk" else "index_body"]  # type: ignore[assignment]
    server: Server = servers[which]  # type: ignore[assignment]
    status, _ = _ask(server.port, method, path, body)
    assert status == 200 or 400 <= status < 500, (method, path, status)
    assert server.proc.poll() is None, server.stderr()


def test_servers_still_serve_after_fuzzing(servers: dict[str, object]) -> None:
    for _ in range(3):
        status, data = _ask(servers["chunk"].port, "GET", servers["chunk_path"], b"")  # type: ignore[attr-defined]
        assert status == 200 and data == servers["chunk_body"]
        time.sleep(0.01)
