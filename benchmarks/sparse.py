"""Sparse images beside casync (issue 17): make time and ratio, du of extract and untar
outputs, peak RSS.

Inputs: a large sparse file with a little random data in many places (default 16 GiB with
64 MiB in 64 places) and a file half holes in random places (default 4 GiB). For each:
``make`` into a fresh store (casync ``make --store``), the index compared byte for byte;
``extract`` of each tool's index from its store; ``untar`` of a catar holding the file
and casync's ``extract`` of it. du is the allocated size (st_blocks). The catar is as large
as the file (the format has no holes): the work directory needs that much free space.

    python benchmarks/sparse.py [--big-gib 16] [--big-data-mib 64] [--half-gib 4] [--work DIR]

Time and peak RSS come from ``measure.run_measured`` (GNU time). On a shared machine the
times are noise beyond their order of magnitude; the du figures are exact.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Measured, available, run_measured

MIB = 1024 * 1024
GIB = 1024 * MIB
OURS = [sys.executable, "-m", "desync_ref"]


def write_big(path: Path, length: int, data: int, pieces: int, seed: int = 1) -> None:
    """``length`` bytes, ``data`` random bytes in ``pieces`` runs at random offsets."""
    rng = random.Random(seed)
    piece = data // pieces
    with open(path, "wb") as f:
        f.truncate(length)
        for n in range(pieces):
            slot = length // pieces
            offset = n * slot + rng.randrange(0, slot - piece) // 4096 * 4096
            os.pwrite(f.fileno(), rng.randbytes(piece), offset)


def write_half(path: Path, length: int, seed: int = 2) -> None:
    """``length`` bytes, half of them random data in runs of 64 KiB..4 MiB at random places,
    the rest holes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(length)
        offset = 0
        while offset < length:
            run = rng.randrange(64 * 1024, 4 * MIB) // 4096 * 4096
            if rng.random() < 0.5:
                block = rng.randbytes(min(run, length - offset))
                os.pwrite(f.fileno(), block, offset)
            offset += run


def du(path: Path) -> int:
    """Allocated bytes of a file or of every file below a directory."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def fmt(m: Measured) -> str:
    return f"{m.seconds:7.2f} s  {m.rss_mib:6.0f} MiB"


def bench(name: str, blob: Path, work: Path, casync: str) -> None:
    apparent, allocated = blob.stat().st_size, du(blob)
    print(f"\n== {name}: {apparent / GIB:.2f} GiB apparent, {allocated / MIB:.0f} MiB allocated")
    for d in ("cs", "os", "cx", "ox", "tree", "cu", "ou"):
        remove(work / d)
    (work / "cs").mkdir()
    (work / "os").mkdir()
    theirs = run_measured([casync, "make", f"--store={work / 'cs'}", str(work / "c.caibx"), str(blob)])
    ours = run_measured([*OURS, "make", "-s", str(work / "os"), str(work / "o.caibx"), str(blob)])
    same = (work / "c.caibx").read_bytes() == (work / "o.caibx").read_bytes()
    print(f"make     casync {fmt(theirs)} | ours {fmt(ours)} | ratio {theirs.seconds / ours.seconds:6.1f}x"
          f" | index identical: {same}")
    theirs = run_measured([casync, "extract", f"--store={work / 'cs'}", str(work / "c.caibx"),
                           str(work / "cx")])
    ours = run_measured([*OURS, "extract", "-s", str(work / "os"), str(work / "o.caibx"),
                         str(work / "ox")])
    print(f"extract  casync {fmt(theirs)} du {du(work / 'cx') / MIB:8.1f} MiB"
          f" | ours {fmt(ours)} du {du(work / 'ox') / MIB:8.1f} MiB")
    for d in ("cx", "ox", "cs", "os"):
        remove(work / d)
    (work / "tree").mkdir()
    os.link(blob, work / "tree" / blob.name)
    # The catar is made by our tar (casync's bytes, tests/test_sparse_tar.py), which reads
    # only the data: casync's make would read the holes too.
    subprocess.run([*OURS, "tar", str(work / "x.catar"), str(work / "tree")], check=True)
    theirs = run_measured([casync, "extract", "--without=privileged", str(work / "x.catar"),
                           str(work / "cu")])
    ours = run_measured([*OURS, "untar", "--no-same-owner", str(work / "x.catar"), str(work / "ou")])
    print(f"untar    casync {fmt(theirs)} du {du(work / 'cu') / MIB:8.1f} MiB"
          f" | ours {fmt(ours)} du {du(work / 'ou') / MIB:8.1f} MiB")
    for d in ("tree", "cu", "ou"):
        remove(work / d)
    (work / "x.catar").unlink()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big-gib", type=float, default=16)
    p.add_argument("--big-data-mib", type=int, default=64)
    p.add_argument("--pieces", type=int, default=64)
    p.add_argument("--half-gib", type=float, default=4)
    p.add_argument("--work", type=Path, help="scratch directory (default: a new temporary one)")
    args = p.parse_args()
    casync = shutil.which("casync")
    if casync is None or not available():
        print("needs casync and GNU time (Debian packages 'casync', 'time')", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="sparse-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        big = work / "big.img"
        write_big(big, int(args.big_gib * GIB), args.big_data_mib * MIB, args.pieces)
        bench(f"{args.big_gib:g} GiB with {args.big_data_mib} MiB of data in {args.pieces} places",
              big, work, casync)
        big.unlink()
        half = work / "half.img"
        write_half(half, int(args.half_gib * GIB))
        bench(f"{args.half_gib:g} GiB, half holes in random places", half, work, casync)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
