"""The S3 backend against a real Ceph RADOS gateway (``rgw`` fixture, tests/rgw_server.py).

Every command runs as the CLI; the bucket is looked at with botocore directly (the fixture's
own client), so what our code wrote is checked by an independent reader. A few unit checks
(requests counted on a throw-away local HTTP server) pin the retry rules: a missing chunk is
asked for once, bytes that are not the chunk are asked for again.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from httputil import Server
from rgw_server import Rgw, clean_env

from desync_ref.errors import ChunkInvalid, ChunkMissing, IndexMissing, StoreError
from desync_ref.formats.chunk import DIGEST_SHA512_256, compress, decompress, digest_function
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.stores import Chunk, PruneStore
from desync_ref.stores.location import open_prune_store, open_write_store
from desync_ref.stores.options import StoreOptions
from desync_ref.stores.s3 import (
    S3Store,
    _addressing,
    open_index_location,
    split_index_location,
    split_location,
)
from desync_ref.stores.s3_credentials import lookup_credentials

pytestmark = pytest.mark.compiled_pass_only

SIZES = ["-m", "16:64:256"]


def cli(args: Sequence[str | os.PathLike[str]], env: dict[str, str], *, check: bool = True,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], env=env, input=stdin,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {list(map(str, args))} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def one_line_failure(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def ids_of(index: Path) -> set[str]:
    return {c.id.hex() for c in parse_index(index.read_bytes()).chunks}


def chunk_keys(prefix: str, ids: set[str], ext: str = ".cacnk") -> list[str]:
    return sorted(f"{prefix}{h[:4]}/{h}{ext}" for h in ids)


@pytest.fixture(scope="module")
def made(rgw: Rgw, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One bucket; a 384 KiB blob (random, with a repeated stretch) made into the S3 store
    ``store/`` and, for comparison, into a local store."""
    base = tmp_path_factory.mktemp("s3made")
    piece = os.urandom(96 * 1024)
    blob = base / "blob"
    blob.write_bytes(os.urandom(128 * 1024) + piece + os.urandom(64 * 1024) + piece)
    bucket = rgw.bucket("made")
    env = rgw.key_env()
    s3 = rgw.location(bucket, "store")
    # the index goes to the bucket too (an S3 index store), and is kept here as well
    cli(["make", *SIZES, "-s", s3, rgw.location(bucket, "indexes/x.caibx"), blob], env)
    (base / "s3.caibx").write_bytes(rgw.get(bucket, "indexes/x.caibx"))
    cli(["make", *SIZES, "-s", base / "local", base / "local.caibx", blob], env)
    return {"base": base, "blob": blob, "bucket": bucket, "env": env, "s3": s3,
            "index": base / "s3.caibx", "local": base / "local", "local_index": base / "local.caibx"}


def test_make_and_extract_through_s3(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    assert made["index"].read_bytes() == made["local_index"].read_bytes()
    ids = ids_of(made["index"])
    assert rgw.keys(made["bucket"], "store/") == chunk_keys("store/", ids)
    out = tmp_path / "out"
    cli(["extract", "-s", made["s3"], made["index"], out], made["env"])
    assert out.read_bytes() == made["blob"].read_bytes()
    # the bytes in the bucket are the local store's files
    h = sorted(ids)[0]
    assert rgw.get(made["bucket"], f"store/{h[:4]}/{h}.cacnk") == (made["local"] / h[:4] / f"{h}.cacnk").read_bytes()


def test_s3_as_cache_in_front_of_a_local_store(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    cache = rgw.location(made["bucket"], "cache/")  # a trailing slash names the same prefix
    out = tmp_path / "out"
    cli(["extract", "-s", made["local"], "-c", cache, made["local_index"], out], made["env"])
    assert out.read_bytes() == made["blob"].read_bytes()
    assert rgw.keys(made["bucket"], "cache/") == chunk_keys("cache/", ids_of(made["local_index"]))
    # the cache alone now serves the file: the source is an empty directory
    empty = tmp_path / "empty"
    empty.mkdir()
    cli(["extract", "-s", empty, "-c", cache, made["local_index"], tmp_path / "again"], made["env"])
    assert (tmp_path / "again").read_bytes() == made["blob"].read_bytes()


def test_cache_and_chop_into_s3(rgw: Rgw, made: dict[str, Any]) -> None:
    ids = ids_of(made["local_index"])
    cached = rgw.location(made["bucket"], "cached")
    cli(["cache", "-s", made["local"], "-c", cached, made["local_index"]], made["env"])
    assert rgw.keys(made["bucket"], "cached/") == chunk_keys("cached/", ids)
    chopped = rgw.location(made["bucket"], "chopped/deeper")
    cli(["chop", "-s", chopped, made["local_index"], made["blob"]], made["env"])
    assert rgw.keys(made["bucket"], "chopped/") == chunk_keys("chopped/deeper/", ids)


def test_failover_group_and_router_over_s3(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    # a failover group moves on when a member fails (a gateway that is not there), not
    # when it lacks a chunk (desync failover.go)
    down = f"s3+http://127.0.0.1:{_closed_port()}/made/store"
    cli(["extract", "-e", "1", "-s", f"{down}|{made['s3']}", made["index"], tmp_path / "a"], made["env"])
    assert (tmp_path / "a").read_bytes() == made["blob"].read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    cli(["extract", "-s", empty, "-s", made["s3"], made["index"], tmp_path / "b"], made["env"])
    assert (tmp_path / "b").read_bytes() == made["blob"].read_bytes()


def test_index_stored_in_and_read_from_s3(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    location = rgw.location(made["bucket"], "indexes/x.caibx")  # written by make (fixture)
    assert rgw.get(made["bucket"], "indexes/x.caibx") == made["local_index"].read_bytes()
    out = tmp_path / "out"
    cli(["extract", "-s", made["s3"], location, out], made["env"])
    assert out.read_bytes() == made["blob"].read_bytes()
    # an index-server in front of the S3 index store
    with (Server("index-server", ["-s", rgw.location(made["bucket"], "indexes")], env=made["env"]) as srv,
          urllib.request.urlopen(srv.url + "x.caibx") as resp):
        assert resp.read() == made["local_index"].read_bytes()
    store, name = open_index_location(rgw.location(made["bucket"], "indexes/nope.caibx"),
                                      StoreOptions(s3_credentials={f"http://{rgw.host}": {
                                          "access-key": rgw.access_key, "secret-key": rgw.secret_key}}))
    with pytest.raises(IndexMissing, match=r"index nope\.caibx not found in s3"):
        store.get_index(name)
    store.close()


def test_uncompressed_keys_have_no_extension(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    ids = ids_of(made["local_index"])
    flag = rgw.location(made["bucket"], "plain-flag")
    cli(["make", "-u", *SIZES, "-s", flag, tmp_path / "a.caibx", made["blob"]], made["env"])
    assert rgw.keys(made["bucket"], "plain-flag/") == chunk_keys("plain-flag/", ids, "")
    h = sorted(ids)[0]
    plain = decompress((made["local"] / h[:4] / f"{h}.cacnk").read_bytes())
    assert rgw.get(made["bucket"], f"plain-flag/{h[:4]}/{h}") == plain
    # the config's "uncompressed" for this location reads them back; the keys come from the
    # config's s3-credentials (no S3_*/AWS_* variable is set)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "s3-credentials": {f"http://{rgw.host}": {"access-key": rgw.access_key, "secret-key": rgw.secret_key}},
        "store-options": {flag: {"uncompressed": True}}}))
    cli(["--config", config, "extract", "-s", flag, tmp_path / "a.caibx", tmp_path / "out"], clean_env())
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()


def test_prune_removes_only_the_stores_own_chunk_keys(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    bucket = rgw.bucket("prune")
    # the store: a copy of the local store's files under p/; the index to keep: half of them
    index = parse_index(made["local_index"].read_bytes())
    everything = ids_of(made["local_index"])
    for key in chunk_keys("", everything):
        rgw.put(bucket, f"p/{key}", (made["local"] / key).read_bytes())
    half = Index(index.feature_flags, index.chunk_size_min, index.chunk_size_avg,
                 index.chunk_size_max, index.chunks[: len(index.chunks) // 2])
    (tmp_path / "half.caibx").write_bytes(encode_index(half))
    keep = ids_of(tmp_path / "half.caibx")
    assert everything - keep
    h = sorted(keep)[0]
    foreign = ["p/zzzz/notachunk", "p/README", f"p/{h[:4]}/{h}", f"p/{h[:4]}/{h}.cacnk.bak",
               f"outside/{h[:4]}/{h}.cacnk", f"p/sub/{h[:4]}/{h}.cacnk"]
    gone = sorted(everything - keep)[0]
    foreign.append(f"outside/{gone[:4]}/{gone}.cacnk")  # a chunk of the same name, outside the prefix
    for key in foreign:
        rgw.put(bucket, key, b"not mine")
    cli(["prune", "-s", rgw.location(bucket, "p"), "-y", tmp_path / "half.caibx"], made["env"])
    assert rgw.keys(bucket) == sorted(chunk_keys("p/", keep) + foreign)


def test_chunk_server_in_front_of_s3(rgw: Rgw, made: dict[str, Any], casync: str, tmp_path: Path) -> None:
    h = sorted(ids_of(made["index"]))[0]
    key = f"store/{h[:4]}/{h}.cacnk"
    blob = os.urandom(5000)
    new_id = digest_function(DIGEST_SHA512_256)(blob).hex()
    with Server("chunk-server", ["-w", "-s", made["s3"]], env=made["env"]) as srv:
        with urllib.request.urlopen(f"{srv.url}{h[:4]}/{h}.cacnk") as resp:
            assert resp.read() == rgw.get(made["bucket"], key)
        put = urllib.request.Request(f"{srv.url}{new_id[:4]}/{new_id}.cacnk", data=compress(blob), method="PUT")
        with urllib.request.urlopen(put) as resp:
            assert resp.status == 200
        # casync's own HTTP client through the chunk-server, S3 behind it
        out = tmp_path / "out"
        proc = subprocess.run([casync, "extract", f"--store={srv.url}", str(made["index"]), str(out)],
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == made["blob"].read_bytes()
    stored = rgw.get(made["bucket"], f"store/{new_id[:4]}/{new_id}.cacnk")
    assert stored == compress(blob)
    rgw.client().delete_object(Bucket=made["bucket"], Key=f"store/{new_id[:4]}/{new_id}.cacnk")


# --- credentials ---------------------------------------------------------------------------------

def test_credentials_each_source_for_real(rgw: Rgw, made: dict[str, Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each place a key can come from, with the right secret and a wrong one, against RGW.
    (The config file reaching the store through the command line: the uncompressed test.)"""
    for name in list(os.environ):
        if name.startswith(("S3_", "AWS_")):
            monkeypatch.delenv(name)
    chunk_id = bytes.fromhex(sorted(ids_of(made["index"]))[0])
    endpoint = f"http://{rgw.host}"
    for secret, good in ((rgw.secret_key, True), ("WRONG" + rgw.secret_key, False)):
        aws = tmp_path / f"aws-{good}"
        aws.write_text(f"[default]\naws_access_key_id = x\naws_secret_access_key = y\n"
                       f"[ci]\naws_access_key_id = {rgw.access_key}\naws_secret_access_key = {secret}\n")
        setups: list[tuple[str, dict[str, str], Any]] = [
            ("S3_*", {"S3_ACCESS_KEY": rgw.access_key, "S3_SECRET_KEY": secret}, None),
            ("AWS_*", {"AWS_ACCESS_KEY_ID": rgw.access_key, "AWS_SECRET_ACCESS_KEY": secret}, None),
            ("config keys", {}, {endpoint: {"access-key": rgw.access_key, "secret-key": secret}}),
            ("config file", {}, {endpoint: {"aws-credentials-file": str(aws), "aws-profile": "ci"}}),
            ("config file, AWS_PROFILE", {"AWS_PROFILE": "ci"}, {endpoint: {"aws-credentials-file": str(aws)}}),
        ]
        for name, env, section in setups:
            with monkeypatch.context() as m:
                for key, value in env.items():
                    m.setenv(key, value)
                store = S3Store(made["s3"], StoreOptions(s3_credentials=section, error_retry=1))
                try:
                    if good:
                        assert store.get_chunk(chunk_id, digest_function(DIGEST_SHA512_256)).id == chunk_id, name
                    else:
                        with pytest.raises(StoreError, match="SignatureDoesNotMatch") as info:
                            store.get_chunk(chunk_id, None)
                        assert made["s3"] in str(info.value), name
                finally:
                    store.close()


def test_wrong_credentials_and_missing_bucket_write_nothing(rgw: Rgw, made: dict[str, Any], tmp_path: Path) -> None:
    bucket = rgw.bucket("untouched")
    env = {**clean_env(), "S3_ACCESS_KEY": rgw.access_key, "S3_SECRET_KEY": "wrong"}
    store = rgw.location(bucket, "s")
    proc = cli(["make", "-e", "1", *SIZES, "-s", store, tmp_path / "a.caibx", made["blob"]], env, check=False)
    err = one_line_failure(proc)
    assert store in err and "403" in err, err
    assert not (tmp_path / "a.caibx").exists()
    assert rgw.keys(bucket) == []
    # a bucket that does not exist
    nobucket = rgw.location("no-such-bucket", "s")
    proc = cli(["make", *SIZES, "-s", nobucket, tmp_path / "b.caibx", made["blob"]], made["env"], check=False)
    err = one_line_failure(proc)
    assert "bucket 'no-such-bucket' does not exist" in err and nobucket in err, err
    assert not (tmp_path / "b.caibx").exists()
    # a server that is not there (a closed port), one attempt
    down = f"s3+http://127.0.0.1:{_closed_port()}/b"
    proc = cli(["extract", "-e", "1", "-s", down, made["index"], tmp_path / "out"], made["env"], check=False)
    err = one_line_failure(proc)
    assert down in err and "EndpointConnectionError" in err, err


def test_stores_that_stay_local(made: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match="must be a local directory here"):
        open_write_store(made["s3"])
    store = open_prune_store(made["s3"])
    assert isinstance(store, PruneStore)
    store.close()


def test_credential_lookup_order(tmp_path: Path) -> None:
    section = {"https://h:9000": {"access-key": "CK", "secret-key": "CS", "aws-region": "eu"}}
    both = {"S3_ACCESS_KEY": "SK", "S3_SECRET_KEY": "SS", "S3_REGION": "r1",
            "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "AS"}
    found = lookup_credentials("s3+https", "h:9000", section, both)
    assert (found.access_key, found.secret_key, found.region) == ("SK", "SS", "r1")
    found = lookup_credentials("s3+https", "h:9000", section, {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "AS",
                                                               "AWS_SESSION_TOKEN": "T"})
    assert (found.access_key, found.secret_key, found.session_token, found.region) == ("AK", "AS", "T", "")
    found = lookup_credentials("s3+https", "h:9000", section, {"S3_REGION": "ignored"})
    assert (found.access_key, found.secret_key, found.region) == ("CK", "CS", "eu")
    # the config key is the scheme without s3+ and the host with its port, exactly
    assert lookup_credentials("s3+http", "h:9000", section, {}).anonymous
    assert lookup_credentials("s3+https", "h", section, {}).anonymous
    aws = tmp_path / "creds"
    aws.write_text("[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[p]\naws_access_key_id = P\n")
    conf = {"http://h": {"aws-credentials-file": str(aws)}}
    assert lookup_credentials("s3+http", "h", conf, {}).access_key == "D"
    with pytest.raises(StoreError, match="did not contain aws_secret_access_key"):
        lookup_credentials("s3+http", "h", conf, {"AWS_PROFILE": "p"})
    with pytest.raises(StoreError, match="failed to get profile 'q'"):
        lookup_credentials("s3+http", "h", {"http://h": {"aws-credentials-file": str(aws), "aws-profile": "q"}}, {})


def test_config_refuses_unknown_s3_credential_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"s3-credentials": {"http://h": {"access_key": "x"}}}))
    proc = cli(["--config", config, "extract", "-s", "s3+http://h/b", "x.caibx", tmp_path / "o"], clean_env(),
               check=False)
    err = one_line_failure(proc)
    assert 's3-credentials "http://h": unknown key "access_key"' in err, err


def test_location_syntax() -> None:
    assert split_location("s3+https://h:9000/b") == ("s3+https", "h:9000", "b", "", "")
    assert split_location("s3+http://h/b/p/q/?lookup=path") == ("s3+http", "h", "b", "p/q/", "path")
    for bad, why in (("s3+http://h/", "expected bucket name"), ("s3+ftp://h/b", "invalid scheme"),
                     ("s3+http://h/b?lookup=xyz", "unknown S3 bucket lookup type")):
        with pytest.raises(StoreError, match=why):
            split_location(bad)
    assert split_index_location("s3+http://h/b/p/x.caibx?lookup=dns") == ("s3+http://h/b/p?lookup=dns", "x.caibx")
    assert _addressing("", False, "127.0.0.1:9000", "b") == "path"
    assert _addressing("dns", False, "127.0.0.1:9000", "b") == "virtual"
    assert _addressing("", True, "s3.eu-west-1.amazonaws.com", "b") == "virtual"
    assert _addressing("", True, "s3.amazonaws.com", "b.c") == "path"
    assert _addressing("path", True, "s3.amazonaws.com", "b") == "path"


# --- retry rules, on a throw-away server that counts requests --------------------------------------

class _Fake(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (404, b"")
    seen: ClassVar[list[str]] = []

    def _reply(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[str, type[_Fake]]]:
    handler = type("Handler", (_Fake,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"s3+http://127.0.0.1:{server.server_address[1]}/bucket/pre", handler
    server.shutdown()
    server.server_close()


def _error_xml(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


OPTIONS = StoreOptions(error_retry=3, error_retry_base_interval=0.001)
CHUNK_ID = bytes(range(32))


def test_missing_chunk_is_asked_for_once(fake: tuple[str, type[_Fake]], monkeypatch: pytest.MonkeyPatch) -> None:
    location, handler = fake
    handler.answer = (404, _error_xml("NoSuchKey"))
    store = S3Store(location, OPTIONS)
    with pytest.raises(ChunkMissing):
        store.get_chunk(CHUNK_ID, None)
    h = CHUNK_ID.hex()
    assert handler.seen == [f"GET /bucket/pre/{h[:4]}/{h}.cacnk"]
    assert store.has_chunk(CHUNK_ID) is False and len(handler.seen) == 2


def test_invalid_chunk_and_server_errors_are_retried(fake: tuple[str, type[_Fake]]) -> None:
    location, handler = fake
    handler.answer = (200, compress(b"not the chunk asked for"))
    store = S3Store(location, OPTIONS)
    with pytest.raises(ChunkInvalid, match=r"in store s3\+http://127\.0\.0\.1"):
        store.get_chunk(CHUNK_ID, digest_function(DIGEST_SHA512_256))
    assert len(handler.seen) == 3
    handler.seen.clear()
    handler.answer = (503, _error_xml("SlowDown"))
    with pytest.raises(StoreError, match=r"GET chunk .*: SlowDown \(HTTP 503\)"):
        store.get_chunk(CHUNK_ID, None)
    assert len(handler.seen) == 3
    handler.seen.clear()
    handler.answer = (500, _error_xml("InternalError"))
    with pytest.raises(StoreError, match=r"GET chunk .*: InternalError \(HTTP 500\)"):
        store.get_chunk(CHUNK_ID, None)
    assert len(handler.seen) == 3
    handler.seen.clear()
    handler.answer = (403, _error_xml("AccessDenied"))
    with pytest.raises(StoreError, match=r"PUT chunk .* to s3\+http://127.0.0.1:\d+/bucket/pre: AccessDenied"):
        store.store_chunk(Chunk(CHUNK_ID, data=b"x"))
    assert len(handler.seen) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
