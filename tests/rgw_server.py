"""A real Ceph RADOS gateway (S3) on 127.0.0.1, started once per test session (pytest plugin).

Setup: one node, the OSD on memstore, no cephx,
``paxos propose interval = 0.1`` (the gateway is up in ~2 s instead of ~12 s), the daemons
run in the foreground (``-f``) as our children so stopping them is exact, free ports for
the monitor and the gateway, everything under a temp directory. A user with known keys is
made with ``radosgw-admin``. The fixture ``rgw`` gives the endpoint, the keys, and a
botocore client to make buckets and look at them independently of desync_ref's code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from httputil import free_port

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY = "RGWTESTACCESSKEY"
SECRET_KEY = "RGWTESTSECRETKEY0123456789"


@dataclass
class Rgw:
    host: str  # 127.0.0.1:port
    access_key: str
    secret_key: str
    workdir: Path
    start_seconds: float
    _client: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def location(self, bucket: str, prefix: str = "", query: str = "") -> str:
        path = f"/{bucket}/{prefix}" if prefix else f"/{bucket}"
        return f"s3+http://{self.host}{path}" + (f"?{query}" if query else "")

    def key_env(self) -> dict[str, str]:
        """The environment for a child that finds the keys in S3_ACCESS_KEY/S3_SECRET_KEY,
        with every other S3/AWS credential variable removed."""
        env = clean_env()
        env.update(S3_ACCESS_KEY=self.access_key, S3_SECRET_KEY=self.secret_key)
        return env

    def client(self) -> Any:
        """botocore, path-style, signed with the user's keys: the tests' independent view."""
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            self._client = botocore.session.get_session().create_client(
                "s3", region_name="us-east-1", endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              retries={"total_max_attempts": 1}))
        return self._client

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(str(item["Key"]) for item in page.get("Contents", ()))
        return sorted(found)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)


def clean_env() -> dict[str, str]:
    """os.environ without any S3_*/AWS_* variable, so no stray credential takes part."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}


def _conf(d: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 1073741824
run dir = {d}/run
pid file = {d}/run/$name.pid
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
mon data = {d}/$name
osd data = {d}/$name
keyring = {d}/keyring
mon cluster log file = {d}/log/cluster.log
paxos propose interval = 0.1
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {d}/rgw
"""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # newest first: rgw, osd, mon
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def missing_parts() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


class RgwFailed(Exception):
    """The gateway (or a step of its setup) did not come up."""


@contextlib.contextmanager
def running_rgw(work: Path) -> Iterator[Rgw]:
    """Mon, OSD and gateway under ``work/ceph``, stopped (rgw, osd, mon) on exit."""
    started = time.monotonic()
    d = work / "ceph"
    for sub in ("mon.a", "osd.0", "log", "run", "rgw"):
        (d / sub).mkdir(parents=True)
    fsid = str(uuid.uuid4())
    mon_port, rgw_port = free_port(), free_port()
    conf = d / "ceph.conf"
    conf.write_text(_conf(d, fsid, mon_port, rgw_port))
    env = {**os.environ, "CEPH_CONF": str(conf)}
    log = (d / "log" / "fg.log").open("ab")
    procs: list[subprocess.Popen[bytes]] = []

    def run(*argv: str) -> None:
        result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if result.returncode != 0:
            raise RgwFailed(f"{' '.join(argv)} failed: {result.stdout.decode(errors='replace')[-2000:]}")

    def start(*argv: str) -> None:
        procs.append(subprocess.Popen([*argv, "-f"], env=env, stdout=log, stderr=log))

    try:
        run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", "--fsid", fsid, str(d / "monmap"))
        run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(d / "monmap"))
        start("ceph-mon", "-i", "a")
        run("ceph", "osd", "create")
        run("ceph-osd", "-i", "0", "--mkfs")
        start("ceph-osd", "-i", "0")
        start("radosgw", "-n", "client.rgw.a")
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{rgw_port}/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RgwFailed("radosgw did not start; see " + str(d / "log")) from None
                time.sleep(0.1)
        run("radosgw-admin", "user", "create", "--uid=ci", "--display-name=ci",
            f"--access-key={ACCESS_KEY}", f"--secret-key={SECRET_KEY}")
        yield Rgw(f"127.0.0.1:{rgw_port}", ACCESS_KEY, SECRET_KEY, d, time.monotonic() - started)
    finally:
        stopping = time.monotonic()
        _stop(procs)
        log.close()
        # Printed with -s: how long the gateway took to go down.
        print(f"\nrgw: stopped in {time.monotonic() - stopping:.1f} s")


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rgw]:
    missing = missing_parts()
    if missing:
        pytest.skip(f"Ceph RGW is not installed (Debian packages 'ceph-mon', 'ceph-osd', 'radosgw'): "
                    f"no {', '.join(missing)}")
    try:
        with running_rgw(tmp_path_factory.mktemp("rgw")) as server:
            print(f"\nrgw: started in {server.start_seconds:.1f} s")
            yield server
    except RgwFailed as exc:
        pytest.fail(str(exc))
