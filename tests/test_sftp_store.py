"""SFTP chunk and index stores (spec/sftp.md) against OpenSSH's sshd on 127.0.0.1.

Both transports carry every test that goes through the CLI where it matters: paramiko's own
SSH client (HOME holds the user's key and known_hosts, as a user's does) and
``CASYNC_SSH_PATH`` (OpenSSH's ssh client, its pipes speaking SFTP). The server runs as the
current user, so a remote store path is a local directory the tests look into.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import assert_clean_failure
from sshd_server import Sshd

from desync_ref.errors import IndexMissing
from desync_ref.formats.chunk import chunk_file_name, parse_chunk_path
from desync_ref.formats.index import parse_index
from desync_ref.stores.options import StoreOptions
from desync_ref.stores.sftp import open_chunk_store, open_index_store

pytestmark = pytest.mark.compiled_pass_only

SIZES = "16:64:256"
TRANSPORTS = ("paramiko", "ssh_path")


@dataclass(frozen=True)
class Data:
    blob: Path
    index: Path  # made from blob with a local store
    store: Path  # that local store
    other_store: Path  # chunks of another blob (prune's victims)

    def ids(self) -> set[bytes]:
        return {c.id for c in parse_index(self.index.read_bytes()).chunks}


def cli(args: Sequence[str | os.PathLike[str]], env: dict[str, str],
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], env=env,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def make_home(base: Path, sshd: Sshd, *, known: bool = True) -> Path:
    """A HOME as a user has it: ``~/.ssh/id_ed25519`` and ``~/.ssh/known_hosts``."""
    ssh = base / ".ssh"
    ssh.mkdir(parents=True)
    shutil.copy(sshd.client_key, ssh / "id_ed25519")
    (ssh / "id_ed25519").chmod(0o600)
    (ssh / "known_hosts").write_text(sshd.known_hosts.read_text() if known else "")
    return base


def paramiko_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CASYNC_SSH_PATH", "SSH_AUTH_SOCK")}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def home(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("home"), sshd)


def env_for(transport: str, sshd: Sshd, home: Path) -> dict[str, str]:
    if transport == "paramiko":
        return paramiko_env(home)
    return {**paramiko_env(home), "CASYNC_SSH_PATH": str(sshd.ssh_wrapper)}


def url(sshd: Sshd, path: Path | str) -> str:
    return f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{path}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    base = tmp_path_factory.mktemp("sftpdata")
    rng = random.Random(2)  # 7 and 5 chunks, the first one 47 KiB
    blob = base / "blob"
    blob.write_bytes(rng.randbytes(320 * 1024))
    other = base / "other"
    other.write_bytes(rng.randbytes(160 * 1024))
    env = dict(os.environ)
    cli(["make", "-m", SIZES, "-s", base / "store", base / "blob.caibx", blob], env)
    cli(["make", "-m", SIZES, "-s", base / "other_store", base / "other.caibx", other], env)
    return Data(blob, base / "blob.caibx", base / "store", base / "other_store")


def stored(store: Path, suffix: str = ".cacnk") -> dict[bytes, Path]:
    """Chunk id → file for every file under a final chunk name."""
    found: dict[bytes, Path] = {}
    for path in store.glob("*/*"):
        chunk_id = parse_chunk_path(f"{path.parent.name}/{path.name}", suffix)
        if isinstance(chunk_id, bytes):
            found[chunk_id] = path
    return found


def assert_store_verifies(store: Path) -> None:
    proc = cli(["verify", "-s", store], dict(os.environ))
    assert proc.stderr == b"", proc.stderr.decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_make_then_extract(transport: str, sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    env = env_for(transport, sshd, home)
    store = tmp_path / "store"
    # make creates the remote store's directory, as it does a local one
    cli(["make", "-n", "2", "-m", SIZES, "-s", url(sshd, store), tmp_path / "x.caibx", data.blob], env)
    assert (tmp_path / "x.caibx").read_bytes() == data.index.read_bytes()
    assert set(stored(store)) == data.ids()
    assert not [p for p in store.rglob("*") if p.is_file() and p.name.startswith(".")], "temp files left"
    assert_store_verifies(store)
    out = tmp_path / "out"
    cli(["extract", "-n", "3", "-s", url(sshd, store), data.index, out], env)
    assert out.read_bytes() == data.blob.read_bytes()


def test_uncompressed_store_names_have_no_extension(sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    env = env_for("ssh_path", sshd, home)
    store = tmp_path / "plain"
    cli(["make", "-u", "-n", "2", "-m", SIZES, "-s", url(sshd, store), tmp_path / "x.caibx", data.blob], env)
    files = [p for p in store.glob("*/*")]
    assert {p.name for p in files} == {i.hex() for i in data.ids()}
    for path in files:  # plain bytes, hashing to the name
        assert hashlib.new("sha512_256", path.read_bytes()).hexdigest() == path.name
    out = tmp_path / "out"
    cli(["extract", "-u", "-n", "2", "-s", url(sshd, store), data.index, out], env)
    assert out.read_bytes() == data.blob.read_bytes()


def test_chop_cache_and_local_cache(sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    env = env_for("paramiko", sshd, home)
    chopped, cached, local_cache = tmp_path / "chopped", tmp_path / "cached", tmp_path / "local"
    chopped.mkdir()
    cached.mkdir()
    # chop into an SFTP store; cache from it into another SFTP store
    cli(["chop", "-n", "2", "-s", url(sshd, chopped), data.index, data.blob], env)
    assert set(stored(chopped)) == data.ids()
    cli(["cache", "-n", "2", "-s", url(sshd, chopped), "-c", url(sshd, cached), data.index], env)
    assert set(stored(cached)) == data.ids()
    # extract from SFTP through a local -c cache, which ends up holding every chunk
    out = tmp_path / "out"
    cli(["extract", "-n", "2", "-s", url(sshd, cached), "-c", local_cache, data.index, out], env)
    assert out.read_bytes() == data.blob.read_bytes()
    assert set(stored(local_cache)) == data.ids()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_index_store(transport: str, sshd: Sshd, home: Path, data: Data, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_for(transport, sshd, home)
    indexes = tmp_path / "indexes"
    indexes.mkdir()  # an index store's directory must exist, as in desync
    index_url = url(sshd, indexes / "made.caibx")
    # make writes its index to the SFTP index location (made under a temp name, renamed)
    cli(["make", "-m", SIZES, "-s", data.store, index_url, data.blob], env)
    assert [p.name for p in indexes.iterdir()] == ["made.caibx"]
    assert (indexes / "made.caibx").read_bytes() == data.index.read_bytes()
    # and extract reads it from there
    out = tmp_path / "out"
    cli(["extract", "-s", data.store, index_url, out], env)
    assert out.read_bytes() == data.blob.read_bytes()
    # the library: what is stored reads back; a name not there is IndexMissing
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if "CASYNC_SSH_PATH" not in env:
        monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)
    store = open_index_store(url(sshd, indexes))
    try:
        index = store.get_index("made.caibx")
        store.store_index("copy.caibx", index)
        assert (indexes / "copy.caibx").read_bytes() == data.index.read_bytes()
        with pytest.raises(IndexMissing):
            store.get_index("absent.caibx")
    finally:
        store.close()


def test_missing_chunk_is_reported(sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(data.store, store)
    gone = sorted(data.ids())[0]
    (store / chunk_file_name(gone)).unlink()
    out = tmp_path / "out"
    proc = cli(["extract", "-n", "2", "-s", url(sshd, store), data.index, out], env_for("paramiko", sshd, home), check=False)
    err = assert_clean_failure(proc)
    assert f"chunk {gone.hex()} not found in {url(sshd, store)}" in err
    assert not out.exists()


@pytest.mark.parametrize(("n", "transport"), [(1, "paramiko"), (4, "ssh_path")])
def test_prune(n: int, transport: str, sshd: Sshd, home: Path, data: Data, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> None:
    """prune removes exactly the chunks not kept, and leftover temp files; with a pool of
    one connection it must not wait for itself (desync #375)."""
    store = tmp_path / "store"
    shutil.copytree(data.store, store)
    shutil.copytree(data.other_store, store, dirs_exist_ok=True)
    keep = data.ids()
    extra = set(stored(store)) - keep
    assert extra
    some_dir = next(iter(stored(store).values())).parent
    (some_dir / ".tmp-cacnk12345").write_bytes(b"half a chunk")
    (store / "notes.txt").write_text("not a chunk")
    env = env_for(transport, sshd, home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if "CASYNC_SSH_PATH" not in env:
        monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)
    result: list[object] = []

    def run() -> None:
        try:
            remote = open_chunk_store(url(sshd, store), StoreOptions(n=n))
            try:
                result.append(set(remote.chunk_ids()))
                result.append(remote.prune(set(keep)))
            finally:
                remote.close()
        except BaseException as exc:  # reported by the assertions below
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"prune with -n {n} did not finish (deadlock)"
    assert result == [keep | extra, len(extra)]
    assert set(stored(store)) == keep
    assert not (some_dir / ".tmp-cacnk12345").exists()
    assert (store / "notes.txt").read_text() == "not a chunk"
    # prefix directories emptied by the prune are gone, as in a local store
    assert {p.name for p in store.iterdir() if p.is_dir()} == {i.hex()[:4] for i in keep}


def test_unknown_host_key_is_refused(sshd: Sshd, data: Data, tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", sshd, known=False)
    out = tmp_path / "out"
    proc = cli(["extract", "-n", "2", "-s", url(sshd, data.store), data.index, out], paramiko_env(home), check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1
    assert f"host key for [127.0.0.1]:{sshd.port} is not known; add it to known_hosts" in err
    assert not out.exists()
    assert (home / ".ssh" / "known_hosts").read_text() == ""  # nothing learnt


_CUTTER = """\
import os, subprocess, sys, threading
child = subprocess.Popen([WRAPPER, *sys.argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def copy(src, dst, left):
    while left > 0:
        data = os.read(src, min(left, 65536))
        if not data:
            break
        os.write(dst, data)
        left -= len(data)
down = threading.Thread(target=copy, args=(child.stdout.fileno(), 1, DOWN), daemon=True)
down.start()
if UP < DOWN:
    # what went up reaches the server (ssh's stdin closed, not ssh killed); the rest of
    # the packet under way never does
    copy(0, child.stdin.fileno(), UP)
    child.stdin.close()
else:
    threading.Thread(target=copy, args=(0, child.stdin.fileno(), UP), daemon=True).start()
down.join()
child.kill()
sys.exit(1)
"""


def cutting_wrapper(sshd: Sshd, where: Path, limit: int, *, upload: bool) -> Path:
    """A CASYNC_SSH_PATH whose connection ends once ``limit`` bytes went to the server
    (``upload``) or came from it, in the middle of a packet."""
    script = where / "cut-ssh"
    up, down = (limit, 1 << 40) if upload else (1 << 40, limit)
    script.write_text(f"#!{sys.executable}\nWRAPPER, UP, DOWN = {str(sshd.ssh_wrapper)!r}, {up}, {down}\n"
                      + _CUTTER)
    script.chmod(0o755)
    return script


def test_connection_killed_during_extract(sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    # 6000 bytes: past the handshake, inside the first chunk (chunks are >= 16 KiB); every
    # retry meets the same end
    env = {**paramiko_env(home), "CASYNC_SSH_PATH": str(cutting_wrapper(sshd, tmp_path, 6000, upload=False))}
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    proc = cli(["extract", "-n", "1", "-e", "2", "-b", "10ms", "-s", url(sshd, data.store), data.index,
                outdir / "out"], env, check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1
    assert f"connection to [127.0.0.1]:{sshd.port} lost" in err
    assert list(outdir.iterdir()) == []


def test_connection_killed_during_make(sshd: Sshd, home: Path, data: Data, tmp_path: Path) -> None:
    """A write cut off leaves nothing under a final chunk name that is not the whole chunk:
    the connection ends after the first 32 KiB write request of the first chunk (47 KiB)
    reached the server, so the server holds part of it."""
    env = {**paramiko_env(home), "CASYNC_SSH_PATH": str(cutting_wrapper(sshd, tmp_path, 32768 + 4000, upload=True))}
    store = tmp_path / "store"
    store.mkdir()
    proc = cli(["make", "-n", "1", "-e", "1", "-m", SIZES, "-s", url(sshd, store), tmp_path / "x.caibx",
                data.blob], env, check=False)
    err = assert_clean_failure(proc)
    assert f"connection to [127.0.0.1]:{sshd.port} lost" in err
    assert not (tmp_path / "x.caibx").exists()
    assert set(stored(store)) < data.ids()
    assert_store_verifies(store)
