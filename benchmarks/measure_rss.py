"""Peak RSS of ``make`` and ``extract`` on a large blob (default 1 GiB), for `make bench`.

GNU time's figure (benchmarks/measure.py) is the largest ``ru_maxrss`` of one process of the
command, not a sum: make and extract fork worker processes, so the process tree is also
sampled from /proc every 20 ms and its peak sum reported twice: of RSS (pages shared by a
parent and its forked children counted in each) and of PSS (``smaps_rollup``: shared pages
split between their users, so the sum is the memory the tree really takes). Prints one line
per command.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import GNU_TIME, SAMPLE_S, available

KIB = 1024
MIB = 1 << 20


@dataclass
class TreeMemory:
    seconds: float
    max_rss_mib: float  # GNU time: the largest process
    rss_sum_mib: float  # peak over samples of the tree's summed VmRSS
    pss_sum_mib: float  # peak over samples of the tree's summed Pss
    processes: int


def _field(path: str, field: str) -> int:
    """The first number after ``field`` in a /proc file (kB for memory), 0 if gone."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = _field(f"/proc/{entry.name}/status", "PPid:")
            parent[int(entry.name)] = ppid
    found, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in found}
        found |= frontier
    return sorted(found)


def run_tree_measured(cmd: list[str]) -> TreeMemory:
    """Run ``cmd`` under GNU time, sampling its process tree's memory; SystemExit if it fails."""
    with tempfile.NamedTemporaryFile("r") as report:
        proc = subprocess.Popen([GNU_TIME, "-f", "%e %M", "-o", report.name, *cmd],
                                stdout=subprocess.DEVNULL)
        rss = pss = processes = 0
        while True:
            try:
                proc.wait(SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                # GNU time's own pages are not the command's: start from its child.
                tree = [pid for pid in _tree(proc.pid) if pid != proc.pid]
                rss = max(rss, sum(_field(f"/proc/{pid}/status", "VmRSS:") for pid in tree))
                pss = max(pss, sum(_field(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in tree))
                processes = max(processes, len(tree))
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        seconds, kib = report.read().split()[-2:]
    return TreeMemory(float(seconds), int(kib) * KIB / MIB, rss * KIB / MIB, pss * KIB / MIB,
                      processes)


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
            m = run_tree_measured(cmd)
            print(f"{name:8s} {args.size_mib} MiB: peak RSS {m.max_rss_mib:6.1f} MiB (largest "
                  f"process), tree sum {m.rss_sum_mib:6.1f} MiB RSS / {m.pss_sum_mib:6.1f} MiB "
                  f"PSS, {m.seconds:6.1f} s, {m.processes} processes")
        same = subprocess.run(["cmp", "-s", str(blob), str(work / "out")]).returncode == 0
        print(f"output identical: {same}")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
