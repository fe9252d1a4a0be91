"""Reading a mounted blob (``mount-index``) against ``extract`` of the same index.

Not run by the tests; needs root, /dev/fuse, fusepy and libfuse2. Makes a store of a blob
(default 256 MiB, random data), then for a local store and for an HTTP chunk-server over it:
times ``extract``; mounts the index and times the first byte (open + a 1-byte read, the
mount already up), then one sequential read of the whole file in 1 MiB reads, comparing its
SHA-256 with the blob's; reads the mount process's peak RSS (``VmHWM`` of
``/proc/<pid>/status``) before unmounting it with SIGTERM. Prints MiB/s (2^20 bytes/s).

    PYTHONPATH=. python benchmarks/mount_read.py [--size-mib 256]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOL = [sys.executable, "-m", "desync_ref"]


def write_blob(path: Path, size: int) -> None:
    block = 8 << 20
    with path.open("wb") as out:
        for n in range(0, size, block):
            out.write(os.urandom(min(block, size - n)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.01)
    raise SystemExit("timed out")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(label: str, store: str, work: Path, index: Path, size: int, digest: str) -> None:
    out = work / "out"
    start = time.perf_counter()
    subprocess.run([*TOOL, "extract", "-s", store, str(index), str(out)], check=True)
    extract_s = time.perf_counter() - start
    out.unlink()
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([*TOOL, "mount-index", "-s", store, str(index), str(mnt)])
    try:
        wait(lambda: os.path.ismount(mnt))
        path = mnt / index.name.removesuffix(".caibx")
        start = time.perf_counter()
        with path.open("rb", buffering=0) as f:
            f.read(1)
        first_ms = (time.perf_counter() - start) * 1000
        h = hashlib.sha256()
        start = time.perf_counter()
        with path.open("rb", buffering=0) as f:
            while block := f.read(1 << 20):
                h.update(block)
        read_s = time.perf_counter() - start
        rss = peak_rss_mib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    mib = size / (1 << 20)
    print(f"{label:13s} extract {mib / extract_s:7.1f} MiB/s | mount: sequential read "
          f"{mib / read_s:7.1f} MiB/s, first byte {first_ms:6.1f} ms, peak RSS {rss:6.1f} MiB, "
          f"exit {code}, content {'ok' if h.hexdigest() == digest else 'WRONG'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mount-", dir=opts.dir))
    server: subprocess.Popen[bytes] | None = None
    try:
        blob = work / "blob"
        size = opts.size_mib << 20
        write_blob(blob, size)
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        index = work / "blob.caibx"
        subprocess.run([*TOOL, "make", "-s", str(work / "store"), str(index), str(blob)], check=True)
        measure("local store", str(work / "store"), work, index, size, digest)
        port = free_port()
        server = subprocess.Popen([*TOOL, "chunk-server", "-s", str(work / "store"),
                                   "-l", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait(listening)
        measure("chunk-server", f"http://127.0.0.1:{port}/", work, index, size, digest)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
