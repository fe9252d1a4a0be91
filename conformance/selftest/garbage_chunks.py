"""Self-test impl: ``python -m desync_ref`` that then overwrites every chunk file of the
store it wrote with garbage. Every ``store`` check must reject it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    rc = subprocess.run([sys.executable, "-m", "desync_ref", *argv], check=False).returncode
    if "-s" in argv:
        store = Path(argv[argv.index("-s") + 1])
        for chunk in store.glob("*/*.cacnk"):
            chunk.write_bytes(b"garbage, not a zstd frame\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
