"""Wall time and peak RSS of one command, measured by GNU time (Debian package ``time``).

A child forked from this Python process would carry the parent's pages into its
``ru_maxrss`` before ``exec``; GNU time is a small C program, so its child's figure is the
command's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

GNU_TIME = "/usr/bin/time"


def available() -> bool:
    return os.access(GNU_TIME, os.X_OK) or shutil.which("time") is not None


def run_measured(cmd: list[str], *, stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB); raises SystemExit if the command fails."""
    with tempfile.NamedTemporaryFile("r") as report:
        proc = subprocess.run([GNU_TIME, "-f", "%e %M", "-o", report.name, *cmd], stdout=stdout)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        seconds, kib = report.read().split()[-2:]
    return float(seconds), int(kib) / 1024
