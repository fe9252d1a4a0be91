"""ssh:// stores and ``pull`` through OpenSSH's real sshd on 127.0.0.1 (fixture ``sshd``).

The interop matrix of client by server: our ``ssh://`` client against ``casync pull`` and
against our ``pull``; ``casync extract --store=host:/path`` (casync 2's ssh syntax) against
our ``pull``, recorded to check that a REQUEST carrying many ids is answered in full. Then the
failures: a missing chunk, a remote that dies mid-transfer, garbage, ABORT, an unknown host
key. Spec: ``spec/protocol.md``, § "The ssh:// store".
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from sshd_server import Sshd

from desync_ref.errors import ProtocolError
from desync_ref.formats import casync_protocol as p
from desync_ref.formats.index import parse_index

pytestmark = pytest.mark.compiled_pass_only


class Setup:
    def __init__(self, work: Path, sshd: Sshd) -> None:
        self.work, self.sshd = work, sshd
        self.blob = work / "blob"
        self.index = work / "blob.caibx"
        self.store = work / "store"
        # Our pull as the remote command: absolute paths, since sshd's session does not
        # inherit this process's environment.
        self.remote = self.script("remote-ours", f'PYTHONPATH={ROOT} exec {sys.executable} -m desync_ref "$@"')

    def script(self, name: str, body: str) -> Path:
        path = self.work / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path

    def env(self, remote: Path | None = None, ssh: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "CASYNC_SSH_PATH": str(ssh or self.sshd.ssh_wrapper)}
        env.pop("CASYNC_REMOTE_PATH", None)
        if remote is not None:
            env["CASYNC_REMOTE_PATH"] = str(remote)
        return env

    def url(self, store: Path | None = None) -> str:
        return f"ssh://127.0.0.1{store or self.store}"

    def extract(self, stores: list[str], out: Path, env: dict[str, str],
                *extra: str) -> subprocess.CompletedProcess[bytes]:
        args = [a for s in stores for a in ("-s", s)]
        return subprocess.run([sys.executable, "-m", "desync_ref", "extract", *args, *extra, str(self.index),
                               str(out)], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def setup(sshd: Sshd, casync: str, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = Setup(tmp_path_factory.mktemp("ssh"), sshd)
    rng = random.Random(3)
    s.blob.write_bytes(rng.randbytes(150_000) + b"compressible text " * 5000)
    subprocess.run([casync, "make", f"--store={s.store}", "--chunk-size=16384", str(s.index), str(s.blob)],
                   check=True, capture_output=True)
    return s


def _one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_our_client_casync_remote(setup: Setup, tmp_path: Path) -> None:
    """ssh:// against ``casync pull`` (CASYNC_REMOTE_PATH unset: ``casync`` on the host)."""
    out = tmp_path / "out"
    proc = setup.extract([setup.url()], out, setup.env())
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == setup.blob.read_bytes()


def test_our_client_our_pull(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = setup.extract([setup.url()], out, setup.env(setup.remote), "-n", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == setup.blob.read_bytes()


def _recorder(setup: Setup, name: str) -> tuple[Path, Path, Path]:
    """A remote command that runs our pull and records both directions."""
    c2s, s2c = setup.work / f"{name}.c2s", setup.work / f"{name}.s2c"
    script = setup.script(name, f'tee {c2s} | {setup.remote} "$@" | tee {s2c}')
    return script, c2s, s2c


def _stream(data: bytes, role: str, *, cut_ok: bool = False) -> list[p.Event]:
    """The events of a recorded stream. ``cut_ok``: the recording may end inside a message
    (casync closes the session once its output is complete, while answers to its read-ahead
    REQUESTs are still on the way, and ``tee`` dies on the closed pipe)."""
    conn = p.Connection(role, p.READABLE_STORE if role == "server" else p.PULL_CHUNKS)
    conn.receive_data(data)
    conn.receive_data(b"")
    events = []
    try:
        while not isinstance(event := conn.next_event(), p.NeedData | p.Closed):
            events.append(event)
    except ProtocolError:
        if not cut_ok:
            raise
    return events


def test_casync_client_our_pull(setup: Setup, casync: str, tmp_path: Path) -> None:
    """``casync extract --store=127.0.0.1:/path`` with our pull as the remote: casync batches
    ids into REQUESTs, and every id it asked for comes back as a CHUNK."""
    remote, c2s, s2c = _recorder(setup, "casync-client")
    out = tmp_path / "out"
    proc = subprocess.run([casync, "extract", f"--store=127.0.0.1:{setup.store}", str(setup.index), str(out)],
                          env=setup.env(remote), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == setup.blob.read_bytes()
    requests = [e for e in _stream(c2s.read_bytes(), "server") if isinstance(e, p.Request)]
    assert max(len(r.ids) for r in requests) > 1, "casync sent no multi-id REQUEST"
    answered = {e.chunk_id for e in _stream(s2c.read_bytes(), "client", cut_ok=True)
                if isinstance(e, p.ChunkData)}
    requested = {i for r in requests for i in r.ids}
    needed = {c.id for c in parse_index(setup.index.read_bytes()).chunks}
    assert needed <= requested and needed <= answered <= requested


def test_missing_chunk_moves_on(setup: Setup, tmp_path: Path) -> None:
    """MISSING is ChunkMissing: alone it fails the extract, a second -s store supplies it."""
    partial = tmp_path / "partial"
    shutil.copytree(setup.store, partial)
    victim = sorted(partial.glob("*/*.cacnk"))[0]
    victim.unlink()
    out = tmp_path / "out"
    proc = setup.extract([setup.url(partial)], out, setup.env(setup.remote))
    err = _one_line_error(proc)
    assert f"chunk {victim.name[:64]} not found" in err
    assert not out.exists()
    for remote in (setup.remote, None):  # our pull, casync pull
        proc = setup.extract([setup.url(partial), str(setup.store)], out, setup.env(remote))
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == setup.blob.read_bytes()
        out.unlink()


def test_failover_group_past_dead_remote(setup: Setup, tmp_path: Path) -> None:
    """A remote command that fails to start is a store error, so ``ssh://…|local`` moves on."""
    out = tmp_path / "out"
    proc = setup.extract([f"{setup.url()}|{setup.store}"], out, setup.env(setup.work / "no-such-remote"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == setup.blob.read_bytes()


# Pass on 30000 bytes of the answers, then SIGKILL the whole remote session (its process group).
CUT = ("import os; n = 30000\nwhile n > 0: d = os.read(0, min(n, 4096)); n -= os.write(1, d) if d else n\n"
       "os.killpg(0, 9)")


@pytest.mark.parametrize(("name", "body", "expect"), [
    # The remote is killed after sending 30000 bytes of its answers: dies mid-transfer.
    ("cut", '{remote} "$@" | {python} -c "{cut}"', "the remote closed the connection"),
    ("garbage", "printf 'Welcome to the machine, have a nice day\\n'", "protocol error"),
    ("abort", "{python} -c \"import sys; from desync_ref.formats import casync_protocol as p; "
              "sys.stdout.buffer.write(p.encode(p.Hello(1)) + p.encode(p.Abort(5, 'disk on fire')))\"",
     "the remote aborted: disk on fire"),
])
def test_broken_remote(setup: Setup, tmp_path: Path, name: str, body: str, expect: str) -> None:
    remote = setup.script(f"remote-{name}", f"export PYTHONPATH={ROOT}\n"
                          + body.format(remote=setup.remote, python=sys.executable, cut=CUT))
    out = tmp_path / "out"
    proc = setup.extract([setup.url()], out, setup.env(remote), "-n", "1")
    err = _one_line_error(proc)
    assert "127.0.0.1" in err and expect in err, err
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temp file left either


def test_unknown_host_key(setup: Setup, tmp_path: Path) -> None:
    """StrictHostKeyChecking with an empty known_hosts: the ssh error, on one line, with the host."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    wrapper = setup.script("ssh-strict", f"exec ssh -F /dev/null -p {setup.sshd.port} -i {setup.sshd.client_key} "
                           f"-o IdentitiesOnly=yes -o UserKnownHostsFile={empty} -o StrictHostKeyChecking=yes "
                           '-o BatchMode=yes "$@"')
    out = tmp_path / "out"
    proc = setup.extract([setup.url()], out, setup.env(setup.remote, ssh=wrapper))
    err = _one_line_error(proc)
    assert "127.0.0.1" in err and "Host key verification failed" in err, err
    assert not out.exists()


def test_several_sessions_in_process(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a shallow session depth the store spreads requests over several sessions, and
    every chunk still comes back verified (in-process, our pull as the remote)."""
    from concurrent.futures import ThreadPoolExecutor

    from desync_ref.formats.chunk import digest_function
    from desync_ref.formats.index import parse_index
    from desync_ref.stores import ssh
    from desync_ref.stores.options import StoreOptions

    monkeypatch.setattr(ssh, "SESSION_DEPTH", 1)
    for key, value in setup.env(setup.remote).items():
        monkeypatch.setenv(key, value)
    index = parse_index(setup.index.read_bytes())
    digest = digest_function(index.digest)
    store = ssh.open_chunk_store(setup.url(), StoreOptions(n=3))
    try:
        with ThreadPoolExecutor(6) as pool:
            chunks = list(pool.map(lambda c: store.get_chunk(c.id, digest).data(), index.chunks))
        assert len(store._sessions) > 1
    finally:
        store.close()
    assert b"".join(chunks) == setup.blob.read_bytes()
