"""Wall time, CPU time, peak RSS and peak processes/threads of one command.

Time and RSS come from GNU time (Debian package ``time``): a child forked from this Python
process would carry the parent's pages into its ``ru_maxrss`` before ``exec``; GNU time is
a small C program, so its child's figure is the command's own. Processes and threads are
sampled from /proc while the command runs (every 20 ms): the command and all its
descendants, GNU time itself not counted.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"
SAMPLE_S = 0.02


@dataclass
class Measured:
    seconds: float
    rss_mib: float
    cpu_seconds: float  # user + system, the command and the children it waited for
    processes: int  # peak number of processes of the command's tree
    threads: int  # peak number of threads summed over that tree


def available() -> bool:
    return os.access(GNU_TIME, os.X_OK)


def _tree(root: int) -> tuple[int, int]:
    """(processes, threads) of ``root``'s descendants, ``root`` itself excluded."""
    parent: dict[int, int] = {}
    threads: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            parent[int(entry.name)] = int(fields["PPid"])
            threads[int(entry.name)] = int(fields["Threads"])
        except (KeyError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in found}
        found |= frontier
    return len(found), sum(threads[pid] for pid in found)


def run_measured(cmd: list[str], *, stdout: int | None = subprocess.DEVNULL) -> Measured:
    """Run ``cmd`` under GNU time; raises SystemExit if it fails."""
    with tempfile.NamedTemporaryFile("r") as report:
        proc = subprocess.Popen([GNU_TIME, "-f", "%e %M %U %S", "-o", report.name, *cmd], stdout=stdout)
        processes = threads = 0
        while True:
            try:
                proc.wait(SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                p, t = _tree(proc.pid)
                processes, threads = max(processes, p), max(threads, t)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        seconds, kib, user, system = report.read().split()[-4:]
    return Measured(float(seconds), int(kib) / 1024, float(user) + float(system), processes, threads)
