"""Wall time, CPU time, peak RSS and peak processes/threads of one command.

Time and RSS come from GNU time (Debian package ``time``): a child forked from this Python
process would carry the parent's pages into its ``ru_maxrss`` before ``exec``; GNU time is
a small C program, so its child's figure is the command's own. Processes and threads are
sampled from /proc while the command runs (every 20 ms): the command and all its
descendants, GNU time itself not counted. A sample reads only that tree (each task's
``children`` file, Linux's CONFIG_PROC_CHILDREN) and costs well under a millisecond: the
first version read every process's ``status``, about 4.4 ms of CPU per sample (a fifth of a
core), which took CPU from a command keeping both cores busy and none from single-threaded
casync, which left the other core idle.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

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
    processes = threads = 0
    frontier = _children(root)
    while frontier:
        pid = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # ended meanwhile
            continue
        processes += 1
        threads += len(tasks)
        for tid in tasks:
            frontier.extend(_read_pids(f"/proc/{pid}/task/{tid}/children"))
    return processes, threads


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [child for tid in tasks for child in _read_pids(f"/proc/{pid}/task/{tid}/children")]


def _read_pids(path: str) -> list[int]:
    try:
        with open(path, "rb") as f:
            return [int(n) for n in f.read().split()]
    except OSError:
        return []


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
