"""A new release of an image: extract version 2 with version 1 as seed, for `make bench`.

A 1 GiB image (default) and a copy with 2 % of it rewritten in scattered places; one store
holds the chunks of both. Extracts version 2 without a seed and with version 1 as seed,
and prints, for each: time, peak RSS (GNU time, benchmarks/measure.py), chunks and bytes
from seed vs store (desync's --print-stats), and the output's disk use (``du``). Also
times the planning step alone on these indexes. Spec: spec/extract.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import available, run_measured

from desync_ref import kernels
from desync_ref.formats.index import parse_index
from desync_ref.operations.chunk_source import ChunkSource

EDIT = 16 << 10  # bytes rewritten at each scattered place


def write_versions(old: Path, new: Path, size: int, changed: float) -> int:
    """Version 1: random data with a few zero stretches; version 2: ``changed`` of it
    rewritten at random places. Returns the number of places."""
    rng = random.Random(2024)
    block = 4 << 20
    with old.open("wb") as out:
        for n in range(0, size, block):
            length = min(block, size - n)
            out.write(bytes(length) if n // block % 16 == 5 else rng.randbytes(length))
    places = int(size * changed) // EDIT
    shutil.copyfile(old, new)
    with new.open("r+b") as out:
        for at in sorted(rng.randrange(0, size - EDIT) for _ in range(places)):
            out.seek(at)
            out.write(rng.randbytes(EDIT))
    return places


def du(path: Path) -> int:
    return path.stat().st_blocks * 512


def plan_seconds(target: Path, seed: Path) -> tuple[float, int]:
    """Time of the planning kernel alone (marks and plan) on the two indexes."""
    assembler = kernels.load("assembler")
    index, old = parse_index(target.read_bytes()), parse_index(seed.read_bytes())
    began = time.perf_counter()
    source = ChunkSource(None, index)  # type: ignore[arg-type]  # only is_zero is used
    marks = [assembler.MARK_ZERO if source.is_zero(c) else 0 for c in index.chunks]
    assembler.plan([c.id for c in index.chunks], [c.size for c in index.chunks], marks,
                   [([c.id for c in old.chunks], [c.size for c in old.chunks])])
    return time.perf_counter() - began, len(index.chunks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--changed", type=float, default=0.02)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    if not available():
        raise SystemExit("GNU time is not installed at /usr/bin/time: apt-get install time")
    tool = [sys.executable, "-m", "desync_ref"]
    work = Path(tempfile.mkdtemp(prefix="desync-ref-seed-", dir=args.dir))
    try:
        old, new, store = work / "v1.img", work / "v2.img", str(work / "store")
        places = write_versions(old, new, args.size_mib << 20, args.changed)
        for name in ("v1", "v2"):
            subprocess.run([*tool, "make", "-s", store, str(work / f"{name}.caibx"),
                            str(work / f"{name}.img")], check=True)
        print(f"image {args.size_mib} MiB, {places} places of {EDIT >> 10} KiB rewritten "
              f"({args.changed:.0%}); backend {kernels.backend()}")
        ok = True
        for label, seed in (("no seed", []), ("v1 as seed", ["--seed", f"{work / 'v1.caibx'}:{old}"])):
            out = work / f"out-{label.replace(' ', '-')}"
            with (work / "stats.json").open("w+b") as stats_file:
                m = run_measured([*tool, "extract", "--print-stats", "-s", store, *seed,
                                  str(work / "v2.caibx"), str(out)], stdout=stats_file.fileno())
                stats_file.seek(0)
                stats = json.loads(stats_file.read())
            same = subprocess.run(["cmp", "-s", str(new), str(out)]).returncode == 0
            ok = ok and same
            print(f"{label:11s}: {m.seconds:6.1f} s, peak RSS {m.rss_mib:6.1f} MiB, "
                  f"du {du(out) / (1 << 20):7.1f} MiB, identical {same}")
            print(f"             chunks from seeds {stats['chunks-from-seeds']}, "
                  f"from store {stats['chunks-from-store']} of {stats['chunks-total']}; "
                  f"bytes copied {stats['bytes-copied-from-seeds']}, "
                  f"cloned {stats['bytes-cloned-from-seeds']}")
            out.unlink()
        seconds, chunks = plan_seconds(work / "v2.caibx", work / "v1.caibx")
        print(f"planning alone: {seconds * 1000:.1f} ms for {chunks} chunks")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
