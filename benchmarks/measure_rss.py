"""Peak RSS of ``make`` and ``extract`` on a large blob (default 1 GiB), for `make bench`.

Each command's peak RSS is measured by GNU time (benchmarks/measure.py). Prints one line
per command.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import available, run_measured


def write_blob(path: Path, size: int) -> None:
    """Mixed content: random stretches, zero runs and repeats, written block by block."""
    block = 8 << 20
    with path.open("wb") as out:
        for n in range(0, size, block):
            kind = (n // block) % 4
            length = min(block, size - n)
            if kind == 2:
                out.write(bytes(length))
            else:
                out.write(hashlib.shake_256(b"blk%d" % (n // block % 24)).digest(length))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    if not available():
        raise SystemExit("GNU time is not installed at /usr/bin/time: apt-get install time")
    tool = [sys.executable, "-m", "desync_ref"]
    work = Path(tempfile.mkdtemp(prefix="desync-ref-rss-", dir=args.dir))
    try:
        blob = work / "blob"
        write_blob(blob, args.size_mib << 20)
        rows = [
            ("make", [*tool, "make", "-s", str(work / "store"), str(work / "x.caibx"), str(blob)]),
            ("extract", [*tool, "extract", "-s", str(work / "store"), str(work / "x.caibx"), str(work / "out")]),
        ]
        for name, cmd in rows:
            m = run_measured(cmd)
            print(f"{name:8s} {args.size_mib} MiB: peak RSS {m.rss_mib:6.1f} MiB, {m.seconds:6.1f} s, "
                  f"{m.processes} processes, {m.threads} threads")
        same = subprocess.run(["cmp", "-s", str(blob), str(work / "out")]).returncode == 0
        print(f"output identical: {same}")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
