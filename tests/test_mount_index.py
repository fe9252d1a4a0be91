"""mount-index (spec/mount.md): real FUSE mounts through /dev/fuse, fusepy and libfuse2.

Every mount is a ``desync-ref mount-index`` subprocess; reads go through the kernel. Each
mount is torn down in a ``finally`` (``fusermount -u -z``, then the process is killed) even
when the test fails.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import assert_clean_failure, require_fuse, run_cli
from httputil import Server, wait_for
from rgw_server import Rgw
from sshd_server import Sshd

from desync_ref.formats.chunk import chunk_file_name
from desync_ref.formats.index import Index, parse_index

pytestmark = pytest.mark.compiled_pass_only

SIZES = "16:64:256"
NAME = "blob"  # the file in the mount: the index's name without .caibx




@dataclass(frozen=True)
class Data:
    root: Path
    blob: bytes
    index_path: Path
    index: Index
    store: Path

    def chunk_path(self, store: Path, n: int) -> Path:
        return store / chunk_file_name(self.index.chunks[n].id)

    def data_chunks(self) -> list[int]:
        """Chunks that are not all zeros (those are made, never fetched)."""
        return [n for n, c in enumerate(self.index.chunks) if any(self.blob[c.start:c.end])]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    require_fuse()
    root = tmp_path_factory.mktemp("mount")
    rng = random.Random(13)
    blob = rng.randbytes(1_100_000) + bytes(400_000) + rng.randbytes(300_000)
    (root / "blob").write_bytes(blob)
    store = root / "store"
    run_cli(["make", "-m", SIZES, "-s", store, root / "blob.caibx", root / "blob"])
    index = parse_index((root / "blob.caibx").read_bytes())
    assert len(index.chunks) > 12
    return Data(root, blob, root / "blob.caibx", index, store)


class Mount:
    """A running ``mount-index``; ``file`` is the blob in the mount."""

    def __init__(self, work: Path, args: Sequence[str | os.PathLike[str]], index: Path,
                 env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
        self.file = self.dir / NAME
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the mount
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desync_ref", "mount-index", *map(str, args), str(index), str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        if not wait_for(lambda: os.path.ismount(self.dir) or self.proc.poll() is not None, 20):
            raise AssertionError("mount did not appear")
        if not os.path.ismount(self.dir):
            raise AssertionError(f"mount-index exited {self.proc.returncode}: {self.stderr()}")

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; its exit code."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def teardown(self) -> None:
        if os.path.ismount(self.dir):
            subprocess.run(["fusermount", "-u", "-z", str(self.dir)], check=False, capture_output=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@contextmanager
def mounted(work: Path, args: Sequence[str | os.PathLike[str]], index: Path,
            env: dict[str, str] | None = None) -> Iterator[Mount]:
    mount = Mount(work, args, index, env)
    try:
        yield mount
    finally:
        mount.teardown()


def pread(path: Path, size: int, offset: int) -> bytes:
    """One read through a fresh descriptor (FUSE drops the page cache on open)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b""
        while len(out) < size:
            part = os.pread(fd, size - len(out), offset + len(out))
            if not part:
                break
            out += part
        return out
    finally:
        os.close(fd)


def check_reads(data: Data, path: Path, seed: int, count: int = 60) -> None:
    """Random-offset reads, reads across chunk boundaries and past the end."""
    rng = random.Random(seed)
    length = len(data.blob)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            offset = rng.randrange(length)
            size = rng.randrange(1, 200_000)
            assert os.pread(fd, size, offset) == data.blob[offset:offset + size], (offset, size)
            got = pread(path, size, offset)
            assert got == data.blob[offset:offset + size], (offset, size)
        for chunk in data.index.chunks[1:]:
            start = chunk.start
            assert pread(path, 16, start - 8) == data.blob[start - 8:start + 8]
        # one read over three chunks, and over the end of the blob
        c = data.index.chunks
        assert pread(path, c[3].start - c[1].start + 2, c[1].start - 1) == data.blob[c[1].start - 1:c[3].start + 1]
        assert pread(path, 1000, length - 10) == data.blob[-10:]
        assert pread(path, 10, length) == b""
    finally:
        os.close(fd)


def test_local_store_reads_concurrent_readers_and_sigterm(data: Data, tmp_path: Path) -> None:
    with mounted(tmp_path, ["-s", data.store], data.index_path) as mount:
        assert os.listdir(mount.dir) == [NAME]
        st = os.stat(mount.file)
        assert st.st_size == len(data.blob) and st.st_mode & 0o777 == 0o444
        with pytest.raises(OSError) as refused:
            os.open(mount.file, os.O_WRONLY)
        assert refused.value.errno in (errno.EROFS, errno.EACCES)
        assert mount.file.read_bytes() == data.blob
        check_reads(data, mount.file, seed=1)

        # Readers in parallel, each on its own ranges, each through its own descriptor.
        failures: list[str] = []

        def reader(number: int) -> None:
            rng = random.Random(100 + number)
            for _ in range(25):
                offset = rng.randrange(len(data.blob))
                size = rng.randrange(1, 150_000)
                if pread(mount.file, size, offset) != data.blob[offset:offset + size]:
                    failures.append(f"reader {number}: {size} bytes at {offset}")

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures
        assert mount.stop(signal.SIGTERM) == 143, mount.stderr()  # 128 + SIGTERM, after unmounting
        assert not os.path.ismount(mount.dir)
        assert "Traceback" not in mount.stderr()


def test_http_chunk_server_reads_and_sigint(data: Data, tmp_path: Path) -> None:
    with Server("chunk-server", ["-s", data.store]) as server, \
            mounted(tmp_path, ["-s", server.url], data.index_path) as mount:
        assert mount.file.read_bytes() == data.blob
        check_reads(data, mount.file, seed=2, count=30)
        assert mount.stop(signal.SIGINT) == 130, mount.stderr()  # 128 + SIGINT, after unmounting
        assert not os.path.ismount(mount.dir)


def test_sftp_store_reads(data: Data, tmp_path: Path, sshd: Sshd) -> None:
    location = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{data.store}"
    with mounted(tmp_path, ["-s", location], data.index_path, env=sshd.ssh_env()) as mount:
        check_reads(data, mount.file, seed=3, count=15)
        assert mount.stop() == 143, mount.stderr()


def test_ssh_store_reads(data: Data, tmp_path: Path, sshd: Sshd, casync: str) -> None:
    """ssh:// with casync's own pull as the remote."""
    with mounted(tmp_path, ["-s", f"ssh://127.0.0.1{data.store}"], data.index_path, env=sshd.ssh_env()) as mount:
        check_reads(data, mount.file, seed=4, count=15)
        assert mount.stop() == 143, mount.stderr()


def test_s3_store_reads(data: Data, tmp_path: Path, rgw: Rgw) -> None:
    bucket = rgw.bucket("mount-index")
    env = rgw.key_env()
    location = rgw.location(bucket, "store")
    made = subprocess.run([sys.executable, "-m", "desync_ref", "cache", "-s", str(data.store), "-c", location,
                           str(data.index_path)], env=env, capture_output=True, timeout=120)
    assert made.returncode == 0, made.stderr.decode()
    with mounted(tmp_path, ["-s", location], data.index_path, env=env) as mount:
        check_reads(data, mount.file, seed=5, count=15)
        assert mount.stop() == 143, mount.stderr()


def test_missing_and_invalid_chunk_eio_then_sighup_reload(data: Data, tmp_path: Path) -> None:
    """A missing chunk and a corrupt one fail their reads with EIO (logged); the mount stays
    usable; after the store file names the whole store, SIGHUP makes the reads work."""
    broken = tmp_path / "broken"
    shutil.copytree(data.store, broken)
    useful = data.data_chunks()
    missing, corrupt = useful[8], useful[10]
    data.chunk_path(broken, missing).unlink()
    shutil.copy(data.chunk_path(data.store, useful[0]), data.chunk_path(broken, corrupt))
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(broken)]}))
    chunks = data.index.chunks
    with mounted(tmp_path, ["--store-file", store_file], data.index_path) as mount:
        for n in (missing, corrupt):
            with pytest.raises(OSError) as failed:
                pread(mount.file, 100, chunks[n].start + 10)
            assert failed.value.errno == errno.EIO
        assert wait_for(lambda: chunks[missing].id.hex() in mount.stderr())
        assert "read of" in mount.stderr() and "failed" in mount.stderr()
        # still mounted and serving the chunks the store has
        assert os.path.ismount(mount.dir)
        assert pread(mount.file, 5000, 1000) == data.blob[1000:6000]
        # an invalid store file keeps the current stores
        store_file.write_text("{ not json")
        mount.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "failed to reload configuration" in mount.stderr())
        store_file.write_text(json.dumps({"stores": [str(data.store)]}))
        mount.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded stores" in mount.stderr())
        for n in (missing, corrupt):
            assert pread(mount.file, chunks[n].size, chunks[n].start) == data.blob[chunks[n].start:chunks[n].end]
        assert mount.stop() == 143, mount.stderr()


def _bits(state: bytes, count: int) -> set[int]:
    return {n for n in range(count) if state[n // 8] >> (n % 8) & 1}


def test_copy_on_read_file_reused_by_second_mount(data: Data, tmp_path: Path) -> None:
    """First mount fills the COR file and saves the state; a second mount over an empty store
    reads the same ranges (nothing fetched); a third starts a new COR file from the state."""
    cor, state = tmp_path / "blob.cor", tmp_path / "blob.state"
    chunks = data.index.chunks
    useful = data.data_chunks()
    ranges = [(0, 150_000), (chunks[useful[9]].start, 70_000)]
    with mounted(tmp_path, ["-s", data.store, "--cor-file", cor, "--cor-state-save", state],
                 data.index_path) as mount:
        for offset, size in ranges:
            assert pread(mount.file, size, offset) == data.blob[offset:offset + size]
        assert mount.stop() == 143, mount.stderr()
    saved = state.read_bytes()
    assert len(saved) == (len(chunks) + 7) // 8
    loaded = _bits(saved, len(chunks))
    touched = {n for offset, size in ranges for n, c in enumerate(chunks)
               if c.start < offset + size and c.end > offset}
    assert touched & set(useful) <= loaded  # every chunk read is marked ...
    assert loaded <= set(useful)  # ... and chunks of zeros never are
    assert len(loaded) < len(useful)  # not everything was read
    on_disk = cor.read_bytes()
    assert len(on_disk) == len(data.blob)
    for n in loaded:  # each marked chunk is in the file
        assert on_disk[chunks[n].start:chunks[n].end] == data.blob[chunks[n].start:chunks[n].end], n

    empty = tmp_path / "empty"
    empty.mkdir()
    with mounted(tmp_path, ["-s", empty, "--cor-file", cor, "--cor-state-save", state],
                 data.index_path) as mount:
        for offset, size in ranges:
            assert pread(mount.file, size, offset) == data.blob[offset:offset + size]
        not_loaded = sorted(set(useful) - loaded)[-1]
        with pytest.raises(OSError) as failed:  # the empty store really is the store
            pread(mount.file, 10, chunks[not_loaded].start)
        assert failed.value.errno == errno.EIO
        assert mount.stop() == 143, mount.stderr()
    assert state.read_bytes() == saved

    fresh = tmp_path / "fresh.cor"
    with mounted(tmp_path, ["-s", data.store, "--cor-file", fresh, "--cor-state-init", state,
                            "--cor-init-n", "2"], data.index_path) as mount:
        def filled() -> bool:
            now = fresh.read_bytes()
            return all(now[chunks[n].start:chunks[n].end] == data.blob[chunks[n].start:chunks[n].end]
                       for n in loaded)

        assert wait_for(filled, 20)  # loaded in the background, no read needed
        assert mount.stop() == 143, mount.stderr()
    assert fresh.stat().st_size == len(data.blob)


def test_seed_chunks_never_fetched(data: Data, tmp_path: Path) -> None:
    """The store holds only the chunks the seed lacks: any fetch of a seed's chunk would fail."""
    seed = bytearray(data.blob)
    seed[500_000:560_000] = random.Random(7).randbytes(60_000)
    (tmp_path / "seed").write_bytes(seed)
    run_cli(["make", "-m", SIZES, tmp_path / "seed.caibx", tmp_path / "seed"])
    in_seed = {c.id for c in parse_index((tmp_path / "seed.caibx").read_bytes()).chunks}
    partial = tmp_path / "partial"
    lacking = [n for n in data.data_chunks() if data.index.chunks[n].id not in in_seed]
    assert 0 < len(lacking) < len(data.data_chunks()) // 2
    for n in lacking:
        target = data.chunk_path(partial, n)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.chunk_path(data.store, n), target)
    with mounted(tmp_path, ["-s", partial, "--seed", tmp_path / "seed.caibx"], data.index_path) as mount:
        assert mount.file.read_bytes() == data.blob
        check_reads(data, mount.file, seed=4, count=20)
        assert mount.stop() == 143, mount.stderr()
        assert "failed" not in mount.stderr()


def test_bad_arguments(data: Data, tmp_path: Path) -> None:
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(data.store)]}))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    err = assert_clean_failure(run_cli(["mount-index", "-s", data.store, "--store-file", store_file,
                                        data.index_path, mnt], check=False))
    assert "--store and --store-file can't be used together" in err
    proc = run_cli(["mount-index", "-s", data.store, data.index_path, tmp_path / "nowhere"], check=False)
    assert "nowhere is not a directory" in assert_clean_failure(proc)
    proc = run_cli(["mount-index", "-s", data.store, data.index_path, data.root], check=False)
    assert "is not empty" in assert_clean_failure(proc)
    assert "no store provided" in assert_clean_failure(run_cli(["mount-index", data.index_path, mnt], check=False))
    (tmp_path / "bad.state").write_bytes(b"\x01")
    proc = run_cli(["mount-index", "-s", data.store, "--cor-file", tmp_path / "c", "--cor-state-init",
                    tmp_path / "bad.state", data.index_path, mnt], check=False)
    assert "sparse state file does not match the index" in assert_clean_failure(proc)


def test_read_maps_byte_ranges_to_chunks_exactly(data: Data) -> None:
    """In process, without the kernel (which reads whole pages): every read that starts or
    ends one byte either side of a chunk boundary gets exactly the blob's bytes."""
    from desync_ref.formats.chunk import digest_function
    from desync_ref.mount.blob import BlobOperations, ChunkLoader
    from desync_ref.operations.chunk_source import ChunkSource
    from desync_ref.stores.location import open_chain

    store = open_chain([str(data.store)], None, digest_function(data.index.digest))
    ops = BlobOperations(NAME, data.index, ChunkLoader(data.index, ChunkSource(store, data.index), []),
                         cache_bytes=300_000)
    try:
        path = "/" + NAME
        for chunk in data.index.chunks:
            for offset in (chunk.start - 1, chunk.start, chunk.start + 1):
                for size in (1, 2, chunk.size + 1):
                    if offset >= 0:
                        assert ops.read(path, size, offset, 0) == data.blob[offset:offset + size]
        assert ops.cache.size <= 300_000
        with pytest.raises(OSError) as missing:
            ops.read("/other", 1, 0, 0)
        assert missing.value.errno == errno.ENOENT
    finally:
        store.close()
