"""``upgrade-s3`` against a real Ceph RADOS gateway (``rgw`` fixture): flat chunk objects
put with botocore end up under ``<xxxx>/<id>.cacnk`` with their bytes; other keys stay; a
rerun changes nothing; a run killed half-way and rerun ends in the same state
(spec/s3.md "upgrade-s3", desync's ``S3Store.Upgrade`` of 2018)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from rgw_server import Rgw

from desync_ref.formats.chunk import compress

pytestmark = pytest.mark.compiled_pass_only


def _flat_store(rgw: Rgw, bucket: str, prefix: str, count: int) -> dict[str, bytes]:
    """``count`` chunks put under their bare ids (the old layout); {id: stored bytes}."""
    chunks = {}
    for n in range(count):
        data = os.urandom(100) + n.to_bytes(4, "big")
        chunk_id = hashlib.sha512(data).digest()[:32].hex()  # any 64 hex digits name a chunk here
        chunks[chunk_id] = compress(data)
        rgw.put(bucket, f"{prefix}{chunk_id}", chunks[chunk_id])
    return chunks


def _upgrade(rgw: Rgw, location: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "desync_ref", "upgrade-s3", "-s", location],
                          env=rgw.key_env(), capture_output=True, text=True, timeout=300)


def _nested(prefix: str, ids: dict[str, bytes]) -> list[str]:
    return sorted(f"{prefix}{h[:4]}/{h}.cacnk" for h in ids)


def test_upgrade_moves_flat_chunks_and_is_idempotent(rgw: Rgw) -> None:
    bucket = rgw.bucket("upgrade-once")
    chunks = _flat_store(rgw, bucket, "store/", 12)
    rgw.put(bucket, "store/README", b"not a chunk")
    rgw.put(bucket, "other/" + next(iter(chunks)), b"outside the prefix")
    proc = _upgrade(rgw, rgw.location(bucket, "store"))
    assert proc.returncode == 0, proc.stderr
    assert rgw.keys(bucket, "store/") == sorted([*_nested("store/", chunks), "store/README"])
    for chunk_id, stored in chunks.items():
        assert rgw.get(bucket, f"store/{chunk_id[:4]}/{chunk_id}.cacnk") == stored
    assert proc.stdout.splitlines()[-1] == "moved 12 chunk(s) to the nested layout"
    assert sorted(proc.stdout.splitlines()[:-1]) == sorted(
        f"store/{h} -> store/{h[:4]}/{h}.cacnk" for h in chunks)
    assert rgw.keys(bucket, "other/") == ["other/" + next(iter(chunks))]
    again = _upgrade(rgw, rgw.location(bucket, "store"))
    assert again.returncode == 0 and again.stdout == "moved 0 chunk(s) to the nested layout\n"
    assert rgw.keys(bucket, "store/") == sorted([*_nested("store/", chunks), "store/README"])


def test_upgrade_killed_half_way_then_rerun(rgw: Rgw) -> None:
    bucket = rgw.bucket("upgrade-killed")
    chunks = _flat_store(rgw, bucket, "", 300)
    location = rgw.location(bucket)
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "upgrade-s3", "-s", location],
                            env=rgw.key_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for _ in range(20):  # some moves made, most not
        assert proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    keys = rgw.keys(bucket)
    assert 20 <= sum(k.endswith(".cacnk") for k in keys) < len(chunks), "the kill did not catch it half-way"
    rerun = _upgrade(rgw, location)
    assert rerun.returncode == 0, rerun.stderr
    assert rgw.keys(bucket) == _nested("", chunks)
    for chunk_id, stored in list(chunks.items())[:30]:
        assert rgw.get(bucket, f"{chunk_id[:4]}/{chunk_id}.cacnk") == stored


def test_upgrade_needs_an_s3_store(tmp_path: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "desync_ref", "upgrade-s3", "-s", "/tmp/store"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "S3" in proc.stderr
