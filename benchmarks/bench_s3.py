"""Throughput of ``make`` and ``extract`` through a real Ceph RGW (S3) beside a local store.

Not a timed test: ``python benchmarks/bench_s3.py [--size MiB] [-n N]``. Starts a one-node
Ceph gateway (tests/rgw_server.py, Debian packages ceph-mon, ceph-osd, radosgw) under a
temp directory, writes a random-ish file (random 1 MiB blocks, a quarter of them repeated,
so some chunks are shared), and times the CLI as a user runs it: ``make`` into a local
store and into ``s3+http://.../bench/store``, then ``extract`` from each. Each extracted
file is compared with the input before its figure counts; a mismatch ends the run (exit 1).
Prints MB/s (10^6 bytes per second of input) for each, as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rgw_server import clean_env, missing_parts, running_rgw  # noqa: E402


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *args], env=env, capture_output=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"desync-ref {' '.join(args)} failed: {proc.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input size in MiB (default 64)")
    parser.add_argument("-n", "--concurrency", type=int, default=10, help="-n of make and extract")
    args = parser.parse_args()
    missing = missing_parts()
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages ceph-mon, ceph-osd, radosgw)", file=sys.stderr)
        return 2
    rng = random.Random(1)
    blocks = [rng.randbytes(1 << 20) for _ in range(max(1, args.size * 3 // 4))]
    data = b"".join(blocks[rng.randrange(len(blocks))] if i % 4 == 3 else blocks[i * 3 // 4 % len(blocks)]
                    for i in range(args.size))
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        work = Path(tmp)
        blob = work / "blob"
        blob.write_bytes(data)
        with running_rgw(work) as rgw:
            rgw.bucket("bench")
            env = {**clean_env(), "S3_ACCESS_KEY": rgw.access_key, "S3_SECRET_KEY": rgw.secret_key,
                   "PYTHONPATH": str(ROOT)}
            n = ["-n", str(args.concurrency)]
            results: dict[str, object] = {"input_bytes": len(data), "rgw_start_s": round(rgw.start_seconds, 1)}
            for name, store in (("local", str(work / "local")), ("s3", rgw.location("bench", "store"))):
                index = work / f"{name}.caibx"
                make = timed(["make", *n, "-s", store, str(index), str(blob)], env)
                out = work / f"{name}.out"
                extract = timed(["extract", *n, "-s", store, str(index), str(out)], env)
                if out.read_bytes() != data:
                    print(f"{name}: extracted bytes differ from the input", file=sys.stderr)
                    return 1
                out.unlink()
                results[name] = {"make_MBps": round(len(data) / make / 1e6, 1),
                                 "extract_MBps": round(len(data) / extract / 1e6, 1),
                                 "make_s": round(make, 2), "extract_s": round(extract, 2)}
            results["chunks_in_bucket"] = len(rgw.keys("bench"))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
