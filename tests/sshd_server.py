"""OpenSSH's sshd on 127.0.0.1, started once per test session (pytest plugin).

Setup: throw-away ed25519 keys, ``UsePAM no``,
``StrictModes no``, absolute ``sshd`` path, ``-D -e`` so the daemon stays our child. The
fixture ``sshd`` gives the port, the client key, a known_hosts file that holds the host key,
and ``ssh_wrapper``: one executable (casync's ``CASYNC_SSH_PATH`` takes no arguments) that
runs OpenSSH's ``ssh`` with this key and known_hosts, so the real ssh client and the real
sshd carry every byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httputil import free_port, stop_process

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@dataclass(frozen=True)
class Sshd:
    host: str
    port: int
    user: str
    client_key: Path  # private key accepted by the server
    known_hosts: Path  # holds the server's host key as "[127.0.0.1]:port"
    ssh_wrapper: Path  # executable: OpenSSH ssh with the options above, then the caller's argv
    workdir: Path

    def ssh_env(self) -> dict[str, str]:
        """Environment for a child that runs ssh through CASYNC_SSH_PATH."""
        return {**os.environ, "CASYNC_SSH_PATH": str(self.ssh_wrapper)}


def have_openssh() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


@contextlib.contextmanager
def running_sshd(work: Path) -> Iterator[Sshd]:
    """sshd with fresh keys under ``work``, stopped on exit (for the fixture and the benchmarks)."""
    keys = work / "keys"
    keys.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copy(keys / "client_key.pub", keys / "authorized_keys")
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
        f"PidFile {work / 'sshd.pid'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "MaxStartups 100:30:200\nMaxSessions 100\n"
        f"Subsystem sftp {SFTP_SERVER}\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log_path = work / "sshd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while b"Server listening" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.02)
        host_pub = (keys / "host_key.pub").read_text().split()
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        wrapper = work / "ssh-wrapper"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"exec ssh -F /dev/null -p {port} -i {keys / 'client_key'} -o IdentitiesOnly=yes "
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes "
            "-o LogLevel=ERROR \"$@\"\n")
        wrapper.chmod(0o755)
        yield Sshd("127.0.0.1", port, user, keys / "client_key", known_hosts, wrapper, work)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not have_openssh():
        pytest.skip("OpenSSH is not installed (Debian packages 'openssh-server', 'openssh-client')")
    try:
        with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
