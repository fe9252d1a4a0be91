"""`make demo`: a real make → extract round trip on sample data made here.

The sample is deterministic (a few MiB with repeated parts, so dedup shows); it is chunked
into a local store with ``desync-ref make`` and rebuilt with ``desync-ref extract``.
If casync is installed, its index of the same data is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from desync_ref.formats.index import parse_index


def sample_data() -> bytes:
    def noise(label: str, size: int) -> bytes:
        return hashlib.shake_256(label.encode()).digest(size)

    text = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i for i in range(20000))
    block = noise("block", 512 * 1024)
    return noise("head", 700 * 1024) + block + text + bytes(1 << 20) + block + noise("tail", 300 * 1024) + block


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "desync_ref", *args], check=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="desync-ref-demo-") as tmp:
        work = Path(tmp)
        data = sample_data()
        (work / "sample.bin").write_bytes(data)
        cli("--version")
        cli("make", "-s", str(work / "store"), str(work / "sample.caibx"), str(work / "sample.bin"))
        cli("extract", "-s", str(work / "store"), str(work / "sample.caibx"), str(work / "restored.bin"))
        index = parse_index((work / "sample.caibx").read_bytes())
        unique = {c.id for c in index.chunks}
        stored = sum(1 for _ in (work / "store").glob("*/*.cacnk"))
        restored = (work / "restored.bin").read_bytes()
        print(f"input bytes:    {len(data)}")
        print(f"chunks:         {len(index.chunks)}")
        print(f"unique chunks:  {len(unique)} (store holds {stored} chunk files)")
        print(f"output == input: {restored == data}")
        casync = shutil.which("casync")
        if casync:
            subprocess.run([casync, "make", str(work / "casync.caibx"), str(work / "sample.bin")],
                           check=True, capture_output=True)
            same = (work / "casync.caibx").read_bytes() == (work / "sample.caibx").read_bytes()
            print(f"index identical to casync's: {same}")
            if not same:
                return 1
        else:
            print("casync not installed: index not compared")
        return 0 if restored == data and stored == len(unique) else 1


if __name__ == "__main__":
    sys.exit(main())
