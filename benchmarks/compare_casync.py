"""casync against desync-ref on the same inputs, alternating, in one run (`make bench`).

For each input kind (random, mixed text/random/zeros, all zeros) it times: make into an
empty store, make into a populated store, extract into a new file; then the chunker alone
(compiled and pure, one core) and peak RSS. Each repetition runs both tools, casync first
on even repetitions and desync-ref first on odd ones, so neither always gets the warmer
cache. Stores live on tmpfs by default because recreating store directories on ext4
measures the kernel's inode allocator (creating directories there is what gets timed
otherwise). Ratios are casync_time / desync_ref_time: above 1 means desync-ref is faster.
The tools do not run on equal means: casync is one process with one thread; desync-ref's
make runs one process per core on files of 32 MiB and more, and its extract one worker
process per core on a local store with more than 4 MiB to read (threads on a remote one); the table
gives each side's peak processes/threads, sampled, beside its figures. Only ratios from
one run mean anything on a shared machine. ``--size-mib 40 --reps 2`` is a quick check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from measure import Measured, available, run_measured

MIB = 1 << 20


def write_input(path: Path, kind: str, size: int) -> None:
    block = 4 * MIB
    with path.open("wb") as out:
        for n in range(0, size, block):
            length = min(block, size - n)
            if kind == "zeros":
                out.write(bytes(length))
            elif kind == "random":
                out.write(os.urandom(length))
            else:  # mixed: text, random and zero stretches, with repeats
                part = (n // block) % 5
                if part == 0:
                    line = b"%08d the quick brown fox jumps over the lazy dog\n"
                    out.write(b"".join(line % i for i in range(n, n + length // 50 + 1))[:length])
                elif part == 1:
                    out.write(bytes(length))
                elif part == 2:
                    out.write(hashlib.shake_256(b"repeat%d" % (n // block % 7)).digest(length))
                else:
                    out.write(os.urandom(length))


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(16 * MIB):
            pass


class Row:
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.casync: list[float] = []
        self.ours: list[float] = []
        self.cpu_casync: list[float] = []
        self.cpu_ours: list[float] = []
        self.rss_casync = 0.0
        self.rss_ours = 0.0
        self.tasks_casync = (0, 0)  # peak (processes, threads)
        self.tasks_ours = (0, 0)

    def add(self, who: str, m: Measured) -> None:
        if who == "casync":
            self.casync.append(m.seconds)
            self.cpu_casync.append(m.cpu_seconds)
            self.rss_casync = max(self.rss_casync, m.rss_mib)
            self.tasks_casync = max(self.tasks_casync, (m.processes, m.threads))
        else:
            self.ours.append(m.seconds)
            self.cpu_ours.append(m.cpu_seconds)
            self.rss_ours = max(self.rss_ours, m.rss_mib)
            self.tasks_ours = max(self.tasks_ours, (m.processes, m.threads))

    def line(self) -> str:
        c, o = statistics.median(self.casync), statistics.median(self.ours)
        mib = self.size / MIB
        # GNU time reports 0.00 s for the quickest runs
        c_rate = f"{mib / c:8.0f}" if c else "       -"
        o_rate = f"{mib / o:8.0f}" if o else "       -"
        ratio = f"{c / o:5.2f}x" if c and o else "    -"
        cc, co = statistics.median(self.cpu_casync), statistics.median(self.cpu_ours)
        return (f"| {self.name:34s} | {c:7.2f} | {c_rate} | {tasks(self.tasks_casync)} | {o:7.2f} | "
                f"{o_rate} | {tasks(self.tasks_ours)} | {ratio} | {cc:6.2f} | {co:6.2f} | "
                f"{self.rss_casync:6.0f} | {self.rss_ours:6.0f} |")


def tasks(peak: tuple[int, int]) -> str:
    return f"{peak[0]:2d} / {peak[1]:3d}"


def measure(row: Row, casync_cmd: Callable[[int], list[str]], ours_cmd: Callable[[int], list[str]],
            reps: int, before: Callable[[int], None] = lambda rep: None) -> Row:
    for rep in range(reps):
        before(rep)
        order = [("casync", casync_cmd(rep)), ("ours", ours_cmd(rep))]
        for who, cmd in order if rep % 2 == 0 else order[::-1]:
            row.add(who, run_measured(cmd))
    return row


def chunker_rate(pure: bool, size: int) -> float:
    code = (
        "import os,time;from desync_ref import kernels;"
        f"k=kernels.load_pure('chunker') if {pure} else kernels.load('chunker');"
        f"d=os.urandom({size});t=time.perf_counter();p=0\n"
        "while p<len(d):\n c=k.find_cut(d,p,len(d),16384,262144,49535);p=len(d) if c<0 else c\n"
        f"print(len(d)/(time.perf_counter()-t)/{MIB})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def bench_kind(kind: str, size: int, work: Path, out_dir: Path, casync: str, ours: list[str],
               reps: int) -> list[Row]:
    blob = work / f"{kind}.bin"
    write_input(blob, kind, size)
    warm(blob)
    c_idx, o_idx = work / "c.caibx", work / "o.caibx"
    c_out, o_out = out_dir / "c.out", out_dir / "o.out"
    rows = [measure(
        Row(f"{kind}: make, empty store", size),
        lambda r: [casync, "make", f"--store={work}/cs{r}", str(c_idx), str(blob)],
        lambda r: [*ours, "make", "-s", f"{work}/os{r}", str(o_idx), str(blob)],
        reps)]
    if c_idx.read_bytes() != o_idx.read_bytes():
        raise SystemExit(f"{kind}: indexes differ")
    rows.append(measure(
        Row(f"{kind}: make, populated store", size),
        lambda r: [casync, "make", f"--store={work}/cs0", str(c_idx), str(blob)],
        lambda r: [*ours, "make", "-s", f"{work}/os0", str(o_idx), str(blob)],
        reps))

    def fresh(rep: int) -> None:
        c_out.unlink(missing_ok=True)
        o_out.unlink(missing_ok=True)

    rows.append(measure(
        Row(f"{kind}: extract", size),
        lambda r: [casync, "extract", f"--store={work}/cs0", str(c_idx), str(c_out)],
        lambda r: [*ours, "extract", "-s", f"{work}/os0", str(o_idx), str(o_out)],
        reps, before=fresh))
    if c_out.read_bytes() != blob.read_bytes() or o_out.read_bytes() != blob.read_bytes():
        raise SystemExit(f"{kind}: extracted output differs")
    for r in range(reps):
        shutil.rmtree(work / f"cs{r}", ignore_errors=True)
        shutil.rmtree(work / f"os{r}", ignore_errors=True)
    for path in (c_out, o_out, blob):
        path.unlink(missing_ok=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--kinds", default="random,mixed,zeros")
    parser.add_argument("--out-dir", default=".",
                        help="where extract writes (default: a disk directory; first touch of "
                             "tmpfs pages makes extract timings swing by 2x)")
    args = parser.parse_args()
    casync = shutil.which("casync")
    if casync is None:
        raise SystemExit("casync is not installed: apt-get install casync")
    if not available():
        raise SystemExit("GNU time is not installed at /usr/bin/time: apt-get install time")
    ours = [sys.executable, "-m", "desync_ref"]
    version = subprocess.run([*ours, "--version"], capture_output=True, text=True).stdout.strip()
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="desync-ref-bench-", dir=args.dir))
    out_dir = Path(tempfile.mkdtemp(prefix="desync-ref-bench-out-", dir=args.out_dir))
    rows: list[Row] = []
    try:
        for kind in args.kinds.split(","):
            rows.extend(bench_kind(kind, size, work, out_dir, casync, ours, args.reps))
        compiled = chunker_rate(False, min(256 * MIB, size))
        pure = chunker_rate(True, min(4 * MIB, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"\n{version}; casync {casync}; {args.size_mib} MiB inputs; median of {args.reps}; "
          f"stores in {args.dir or 'the temp dir'}; {os.cpu_count()} cores; each repetition "
          f"alternates which tool runs first\n")
    print("Not equal means: casync runs as 1 process with 1 thread; desync-ref's make uses one "
          "process per core (-n, default the core count) on files of 32 MiB and more, and its "
          "extract one worker process per core on a local store. procs / threads: the peak of each "
          "side, sampled from /proc while it runs.\n")
    print("CPU s: user + system of the command and its children (median). On a machine shared "
          "with other work the wall-time ratio shrinks towards the CPU-time ratio, which is "
          "the steadier figure there.\n")
    print("| row | casync s | casync MiB/s | casync procs / threads | desync-ref s | desync-ref MiB/s "
          "| desync-ref procs / threads | ratio | casync CPU s | desync-ref CPU s "
          "| casync RSS MiB | desync-ref RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    print(f"\nchunker alone, one core: compiled {compiled:.0f} MiB/s, pure {pure:.1f} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
