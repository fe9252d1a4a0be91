"""Extract of a 64 MiB file from an SFTP store against the same store read locally.

Not run by the tests. Starts OpenSSH's sshd on 127.0.0.1 (as ``tests/sshd_server.py``
does: throw-away keys, the current user), makes a local store of 64 MiB of random data,
then times ``extract`` once from the local path, once over ``sftp://`` with paramiko's SSH
client (HOME set to a directory holding the key and known_hosts) and once through
``CASYNC_SSH_PATH`` (OpenSSH's ssh). Prints MB/s (10^6 bytes per second) for each.

    PYTHONPATH=. python benchmarks/bench_sftp.py [-n 10] [--size-mib 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sshd_server import running_sshd


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "desync_ref", *args], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10, help="connections / threads (default 10)")
    parser.add_argument("--size-mib", type=int, default=64)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sftp-") as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        with running_sshd(work / "sshd") as sshd:
            port, key, known = sshd.port, sshd.client_key, sshd.known_hosts
            home = work / "home"
            (home / ".ssh").mkdir(parents=True)
            shutil.copy(key, home / ".ssh" / "id_ed25519")
            shutil.copy(known, home / ".ssh" / "known_hosts")
            blob = work / "blob"
            size = opts.size_mib * 1024 * 1024
            blob.write_bytes(os.urandom(size))
            store, index = work / "store", work / "blob.caibx"
            env = {k: v for k, v in os.environ.items() if k not in ("CASYNC_SSH_PATH", "SSH_AUTH_SOCK")}
            subprocess.run([sys.executable, "-m", "desync_ref", "make", "-s", str(store), str(index), str(blob)],
                           env=env, check=True)
            url = f"sftp://{sshd.user}@127.0.0.1:{port}{store}"
            runs = [
                ("local store", str(store), env),
                ("sftp:// paramiko", url, {**env, "HOME": str(home)}),
                ("sftp:// CASYNC_SSH_PATH", url, {**env, "CASYNC_SSH_PATH": str(sshd.ssh_wrapper)}),
            ]
            for name, location, run_env in runs:
                out = work / "out"
                seconds = timed(["extract", "-n", str(opts.n), "-s", location, str(index), str(out)], run_env)
                if out.read_bytes() != blob.read_bytes():
                    sys.exit(f"{name}: output differs from the input")
                out.unlink()
                print(f"{name:26s} {seconds:6.2f} s  {size / seconds / 1e6:7.1f} MB/s")


if __name__ == "__main__":
    main()
