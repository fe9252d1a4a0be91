"""Extract over ssh:// next to a local store, on the same data (not run by the tests).

Starts OpenSSH's sshd on 127.0.0.1 (the tests' recipe, ``tests/sshd_server.py``), makes a
store with casync from a file of random and text data (``--size-mib``, default 64), then
times ``desync-ref extract`` of it from: the local store; ``ssh://127.0.0.1/<store>`` with
``casync pull`` as the remote; the same with ``desync-ref pull`` as the remote; and
``casync extract --store=127.0.0.1:<store>`` with both remotes; and, as the ceiling, plain
``ssh 127.0.0.1 cat <file>``. Prints MB/s (10^6 bytes
per second of output) per case, best of ``--reps``. Everything runs on this machine, so
the figures say what the protocol and its drivers cost, not what a network would.

    python benchmarks/bench_ssh.py [--size-mib 64] [--reps 2] [-n 10]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import sshd_server  # noqa: E402

MIB = 1 << 20


def write_input(path: Path, size: int) -> None:
    rng = random.Random(1)
    with path.open("wb") as out:
        for n in range(0, size, 4 * MIB):
            length = min(4 * MIB, size - n)
            if (n // (4 * MIB)) % 2:
                out.write(rng.randbytes(length))
            else:
                line = b"%08d the quick brown fox jumps over the lazy dog\n"
                out.write(b"".join(line % i for i in range(n, n + length // 50 + 1))[:length])


def timed(argv: list[str], env: dict[str, str], out: Path, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{argv[:3]} failed: {proc.stderr.decode().strip()}")
        best = min(best, elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("-n", type=int, default=10, help="desync-ref extract -n (sessions/threads)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        with sshd_server.running_sshd(work / "sshd") as sshd:
            blob, index, store, out = work / "blob", work / "blob.caibx", work / "store", work / "out"
            size = args.size_mib * MIB
            write_input(blob, size)
            subprocess.run(["casync", "make", f"--store={store}", str(index), str(blob)], check=True,
                           capture_output=True)
            remote = work / "remote-ours"
            remote.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m desync_ref "$@"\n')
            remote.chmod(0o755)
            base = {**os.environ, "PYTHONPATH": str(ROOT), "CASYNC_SSH_PATH": str(sshd.ssh_wrapper)}
            base.pop("CASYNC_REMOTE_PATH", None)
            ours = {**base, "CASYNC_REMOTE_PATH": str(remote)}
            ref = [sys.executable, "-m", "desync_ref", "extract", "-n", str(args.n)]
            cases = [
                ("desync-ref extract, local store", [*ref, "-s", str(store)], base),
                ("desync-ref extract, ssh:// -> casync pull", [*ref, "-s", f"ssh://127.0.0.1{store}"], base),
                ("desync-ref extract, ssh:// -> desync-ref pull", [*ref, "-s", f"ssh://127.0.0.1{store}"], ours),
                ("casync extract, local store", ["casync", "extract", f"--store={store}"], base),
                ("casync extract, host: -> casync pull", ["casync", "extract", f"--store=127.0.0.1:{store}"], base),
                ("casync extract, host: -> desync-ref pull", ["casync", "extract", f"--store=127.0.0.1:{store}"],
                 ours),
            ]
            print(f"{args.size_mib} MiB, {sum(1 for _ in store.glob('*/*.cacnk'))} chunks, best of {args.reps}, "
                  f"desync-ref -n {args.n}")
            start = time.perf_counter()
            raw = subprocess.run([str(sshd.ssh_wrapper), "127.0.0.1", "cat", str(blob)], capture_output=True,
                                 check=True).stdout
            seconds = time.perf_counter() - start
            assert raw == blob.read_bytes()
            print(f"{'reference: ssh 127.0.0.1 cat blob':48s} {seconds:7.2f} s {size / seconds / 1e6:8.1f} MB/s")
            for label, argv, env in cases:
                seconds = timed([*argv, str(index), str(out)], env, out, args.reps)
                if out.read_bytes() != blob.read_bytes():
                    raise SystemExit(f"{label}: output differs")
                print(f"{label:48s} {seconds:7.2f} s {size / seconds / 1e6:8.1f} MB/s")


if __name__ == "__main__":
    main()
