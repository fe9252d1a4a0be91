"""Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1, once per session (plugin).

Setup: filesystem storage in a temp dir,
``delete: enabled: true`` so manifests can be deleted by digest, a fixed ``http.secret``.
Fixtures: ``oci_registry`` (no authentication) and ``oci_registry_auth`` (``auth:
htpasswd`` with one bcrypt user, started only when a test asks for it; the bcrypt line is
written with Python's ``bcrypt``, so apache2-utils' htpasswd is not needed).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httputil import free_port, stop_process

REGISTRY = "docker-registry"
AUTH_USER = "desync"
AUTH_PASSWORD = "s3cret-pass"


@dataclass(frozen=True)
class Registry:
    port: int
    workdir: Path
    user: str = ""
    password: str = ""

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"

    def location(self, repository: str) -> str:
        return f"oci+http://{self.hostport}/{repository}"


def _start(work: Path, auth: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        "  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: not-a-secret\n" + auth)
    log = (work / "registry.log").open("wb")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                break
        except urllib.error.HTTPError:
            break  # 401 from the htpasswd instance: it is up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"docker-registry did not start: {(work / 'registry.log').read_text(errors='replace')}")
            time.sleep(0.03)
    return proc, port


def _need_registry() -> None:
    if shutil.which(REGISTRY) is None:
        pytest.skip("docker-registry is not installed (Debian package 'docker-registry')")


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    _need_registry()
    work = tmp_path_factory.mktemp("oci-registry")
    proc, port = _start(work, "")
    try:
        yield Registry(port, work)
    finally:
        stop_process(proc, 10)


@pytest.fixture(scope="session")
def oci_registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    _need_registry()
    try:
        import bcrypt
    except ImportError:
        pytest.skip("bcrypt is not installed (Python package 'bcrypt', for the registry's htpasswd file)")
    work = tmp_path_factory.mktemp("oci-registry-auth")
    hashed = bcrypt.hashpw(AUTH_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (work / "htpasswd").write_text(f"{AUTH_USER}:{hashed}\n")
    proc, port = _start(work, f"auth:\n  htpasswd:\n    realm: desync-test\n    path: {work / 'htpasswd'}\n")
    try:
        yield Registry(port, work, AUTH_USER, AUTH_PASSWORD)
    finally:
        stop_process(proc, 10)
