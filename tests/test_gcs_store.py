"""The GCS backend (``gs://bucket/prefix``) against fake-gcs-server, and its error paths.

Spec: spec/gcs.md. The CLI runs as a subprocess with STORAGE_EMULATOR_HOST set to
the session's fake-gcs-server (tests/gcs_server.py); what lands in the bucket is read back
through the server's own API, not through the code under test. Retries, re-fetches,
credentials and refusals are checked against a scripted loopback server that records
every request.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_clean_failure, skip_not_component
from gcs_server import FakeGcs
from httputil import Server, free_port

from desync_ref.errors import ChunkInvalid, ChunkMissing, StoreError
from desync_ref.formats.chunk import compress
from desync_ref.formats.index import parse_index
from desync_ref.stores import PruneStore
from desync_ref.stores import gcs as gcs_mod
from desync_ref.stores.location import open_store
from desync_ref.stores.options import StoreOptions

pytestmark = pytest.mark.compiled_pass_only

SIZES = ["-m", "16:64:256"]
BUCKET = "desync"


def digest(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


def run(gcs: FakeGcs | None, *args: object, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The CLI with GCS pointed at the fake server (or at ``env``)."""
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], capture_output=True,
                          env=env if env is not None else gcs.env() if gcs else None, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def keys(ids: set[str], prefix: str, ext: str = ".cacnk") -> set[str]:
    return {f"{prefix}{i[:4]}/{i}{ext}" for i in ids}


@pytest.fixture(scope="module")
def made(gcs: FakeGcs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A blob, its index made into a local store, and the same made into gs://desync/store."""
    work = tmp_path_factory.mktemp("gcsdata")
    rng = random.Random(7)
    part = rng.randbytes(96 * 1024)
    blob = work / "blob"
    blob.write_bytes(part + rng.randbytes(160 * 1024) + part)  # repeated part: shared chunks
    gcs.create_bucket(BUCKET)
    run(None, "make", *SIZES, "-s", work / "local", work / "local.caibx", blob)
    run(gcs, "make", *SIZES, "-s", f"gs://{BUCKET}/store/", work / "gcs.caibx", blob)
    index = parse_index((work / "local.caibx").read_bytes())
    ids = {c.id.hex() for c in index.chunks}
    assert len(ids) >= 3
    return {"work": work, "blob": blob, "ids": ids, "local": work / "local",
            "index": work / "local.caibx", "gcs_index": work / "gcs.caibx"}


# --- through fake-gcs-server ---------------------------------------------------------------

def test_make_then_extract(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    # the trailing "/" of the location is dropped: keys are "store/xxxx/<id>.cacnk" (desync)
    assert made["gcs_index"].read_bytes() == made["index"].read_bytes()
    assert gcs.names(BUCKET, "store/") == keys(made["ids"], "store/")
    some = sorted(made["ids"])[0]
    assert gcs.get(BUCKET, f"store/{some[:4]}/{some}.cacnk") == (made["local"] / some[:4] / f"{some}.cacnk").read_bytes()
    run(gcs, "extract", "-s", f"gs://{BUCKET}/store", made["gcs_index"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()


def test_gcs_as_cache(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    run(gcs, "extract", "-s", made["local"], "-c", f"gs://{BUCKET}/cache", made["index"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()
    assert gcs.names(BUCKET, "cache/") == keys(made["ids"], "cache/")
    # the cache alone now serves the whole index
    (tmp_path / "empty-store").mkdir()
    run(gcs, "extract", "-s", tmp_path / "empty-store", "-c", f"gs://{BUCKET}/cache", made["index"], tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == made["blob"].read_bytes()


def test_cache_and_chop_into_gcs(gcs: FakeGcs, made: dict[str, Any]) -> None:
    run(gcs, "cache", "-s", made["local"], "-c", f"gs://{BUCKET}/cached", made["index"])
    assert gcs.names(BUCKET, "cached/") == keys(made["ids"], "cached/")
    run(gcs, "chop", "-s", f"gs://{BUCKET}/chopped", made["index"], made["blob"])
    assert gcs.names(BUCKET, "chopped/") == keys(made["ids"], "chopped/")
    for name in keys(made["ids"], "chopped/"):
        assert gcs.get(BUCKET, name) == gcs.get(BUCKET, "store/" + name.split("/", 1)[1])


def test_prune_through_the_library(gcs: FakeGcs, made: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    run(gcs, "cache", "-s", made["local"], "-c", f"gs://{BUCKET}/prune/me", made["index"])
    ids = sorted(made["ids"])
    some = ids[0]
    foreign = {
        "prune/me/notes.txt",  # not a chunk name
        "prune/me/x.caibx",  # an index beside the chunks
        f"prune/me/{some[:4]}/{some}",  # the other storage form
        f"prune/me/{some[:3]}/{some}.cacnk",  # wrong prefix directory
        f"prune/me/{some[:4]}/{some.upper()}.cacnk",  # not our spelling of an id
        f"prune/me/deeper/{some[:4]}/{some}.cacnk",  # one level too deep
        f"prune/{some[:4]}/{some}.cacnk",  # outside the prefix
        f"prune/mex/{some[:4]}/{some}.cacnk",  # a sibling prefix that starts the same
    }
    for name in foreign:
        gcs.put(BUCKET, name, b"foreign")
    store = open_store(f"gs://{BUCKET}/prune/me")
    assert isinstance(store, PruneStore)
    store.page_size = 2  # type: ignore[attr-defined]  # several pages for a handful of keys
    assert {i.hex() for i in store.chunk_ids()} == made["ids"]
    keep = {bytes.fromhex(i) for i in ids[: len(ids) // 2]}
    assert store.prune(keep) == len(ids) - len(keep)
    store.close()
    kept = keys({i.hex() for i in keep}, "prune/me/")
    assert gcs.names(BUCKET, "prune/") == kept | foreign


def test_prune_cli(gcs: FakeGcs, made: dict[str, Any]) -> None:
    """prune through the CLI: only chunks no index names go; other keys stay."""
    run(gcs, "cache", "-s", made["local"], "-c", f"gs://{BUCKET}/prunecli", made["index"])
    gcs.put(BUCKET, "prunecli/0000/" + "0" * 64 + ".cacnk", b"x")  # a chunk no index names
    gcs.put(BUCKET, "prunecli/readme", b"x")
    run(gcs, "prune", "-s", f"gs://{BUCKET}/prunecli", "-y", made["index"])
    assert gcs.names(BUCKET, "prunecli/") == keys(made["ids"], "prunecli/") | {"prunecli/readme"}


def test_index_in_gcs(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    location = f"gs://{BUCKET}/indexes/blob.caibx"
    run(gcs, "make", *SIZES, "-s", f"gs://{BUCKET}/store", location, made["blob"])
    assert gcs.get(BUCKET, "indexes/blob.caibx") == made["index"].read_bytes()
    run(gcs, "extract", "-s", f"gs://{BUCKET}/store", location, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()
    proc = run(gcs, "extract", "-s", f"gs://{BUCKET}/store", f"gs://{BUCKET}/indexes/none.caibx",
               tmp_path / "none", check=False)
    assert "none.caibx not found" in assert_clean_failure(proc)
    assert not (tmp_path / "none").exists()


def test_uncompressed_keys_have_no_extension(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    run(gcs, "make", "-u", *SIZES, "-s", f"gs://{BUCKET}/plain", tmp_path / "x.caibx", made["blob"])
    assert gcs.names(BUCKET, "plain/") == keys(made["ids"], "plain/", "")
    index = parse_index((tmp_path / "x.caibx").read_bytes())
    first = index.chunks[0]
    stored = gcs.get(BUCKET, f"plain/{first.id.hex()[:4]}/{first.id.hex()}")
    assert stored == made["blob"].read_bytes()[: first.size]
    run(gcs, "extract", "-u", "-s", f"gs://{BUCKET}/plain", tmp_path / "x.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()


def test_missing_bucket(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    proc = run(gcs, "make", *SIZES, "-s", "gs://no-such-bucket/p", tmp_path / "x.caibx", made["blob"], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1
    assert "gs://no-such-bucket/p" in err and "bucket 'no-such-bucket' does not exist" in err
    assert not (tmp_path / "x.caibx").exists()
    proc = run(gcs, "extract", "-s", "gs://no-such-bucket/p", made["index"], tmp_path / "out", check=False)
    assert "bucket 'no-such-bucket' does not exist" in assert_clean_failure(proc)
    assert proc.returncode == 1


def test_server_down(made: dict[str, Any], tmp_path: Path) -> None:
    env = FakeGcs(f"127.0.0.1:{free_port()}", tmp_path).env()  # nothing listens there
    proc = run(None, "extract", "-e", "2", "-b", "0.01", "-s", f"gs://{BUCKET}/store", made["index"],
               tmp_path / "out", env=env, check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and f"gs://{BUCKET}/store" in err and "refused" in err.lower()


def test_chunk_server_in_front(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    with Server("chunk-server", ["-s", f"gs://{BUCKET}/store"], env={"STORAGE_EMULATOR_HOST": gcs.host}) as srv:
        some = sorted(made["ids"])[1]
        with urllib.request.urlopen(f"{srv.url}{some[:4]}/{some}.cacnk", timeout=10) as resp:
            assert resp.read() == gcs.get(BUCKET, f"store/{some[:4]}/{some}.cacnk")
        run(None, "extract", "-s", srv.url, made["index"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == made["blob"].read_bytes()


def test_failover_group(gcs: FakeGcs, made: dict[str, Any], tmp_path: Path) -> None:
    # the GCS member fails (no bucket): the local one serves
    group = f"gs://no-such-bucket/s|{made['local']}"
    run(gcs, "extract", "-s", group, made["index"], tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == made["blob"].read_bytes()
    # the GCS member works: the local one (empty) is never asked
    (tmp_path / "empty").mkdir()
    run(gcs, "extract", "-s", f"gs://{BUCKET}/store|{tmp_path / 'empty'}", made["index"], tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == made["blob"].read_bytes()


# --- a scripted server: retries, re-fetches, refusals, credentials ----------------------------

Reply = tuple[int, bytes]


class Scripted:
    """A loopback HTTP server answering each path from a list of replies (the last one
    repeats) and recording (method, path, headers, body) of every request."""

    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                path = self.path.split("?", 1)[0]
                replies = owner.script.get(path, [(404, b'{"error":{"code":404,"message":"Not Found"}}')])
                status, data = replies.pop(0) if len(replies) > 1 else replies[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def requests_to(self, path: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [r for r in self.seen if r[1].split("?", 1)[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    server = Scripted()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    yield server
    server.close()


DATA = b"a chunk of GCS test data " * 40
CID = digest(DATA)
OBJ = f"/storage/v1/b/bkt/o/p%2F{CID.hex()[:4]}%2F{CID.hex()}.cacnk"
FAST = StoreOptions(error_retry=3, error_retry_base_interval=0.01)


def gcs_store(options: StoreOptions = FAST) -> Any:
    return gcs_mod.open_chunk_store("gs://bkt/p", options)


def test_transient_errors_are_retried(scripted: Scripted) -> None:
    scripted.script[OBJ] = [(503, b"busy"), (429, b"slow down"), (200, compress(DATA))]
    assert gcs_store().get_chunk(CID, digest).data() == DATA
    assert len(scripted.requests_to(OBJ)) == 3
    scripted.script[OBJ] = [(503, b"busy")]
    with pytest.raises(StoreError, match=r"gs://bkt/p: GET .* unexpected status \(HTTP 503\): busy"):
        gcs_store().get_chunk(CID, digest)
    assert len(scripted.requests_to(OBJ)) == 3 + 3


def test_invalid_chunk_is_fetched_again(scripted: Scripted) -> None:
    scripted.script[OBJ] = [(200, compress(DATA)[:-3]), (200, compress(DATA))]  # a short read, then whole
    assert gcs_store().get_chunk(CID, digest).data() == DATA
    assert len(scripted.requests_to(OBJ)) == 2
    scripted.script[OBJ] = [(200, compress(b"other bytes"))]
    with pytest.raises(ChunkInvalid, match="gs://bkt/p"):
        gcs_store(StoreOptions(error_retry=2, error_retry_base_interval=0.01)).get_chunk(CID, digest)
    assert len(scripted.requests_to(OBJ)) == 2 + 2


def test_missing_chunk_is_not_retried(scripted: Scripted) -> None:
    scripted.script["/storage/v1/b/bkt"] = [(200, b'{"name":"bkt"}')]
    store = gcs_store()
    with pytest.raises(ChunkMissing, match=f"chunk {CID.hex()} not found in gs://bkt/p"):
        store.get_chunk(CID, digest)
    assert not store.has_chunk(CID)
    assert len(scripted.requests_to(OBJ)) == 2  # one GET of the media, one of the metadata
    assert len(scripted.requests_to("/storage/v1/b/bkt")) == 1  # the bucket is checked once


def test_bucket_named_missing_by_gcs(scripted: Scripted) -> None:
    scripted.script[OBJ] = [(404, b'{"error":{"code":404,"message":"The specified bucket does not exist."}}')]
    with pytest.raises(StoreError, match=r"^gs://bkt/p: bucket 'bkt' does not exist$"):
        gcs_store().get_chunk(CID, digest)


@pytest.mark.parametrize("status", [401, 403])
def test_refusals_name_the_store(scripted: Scripted, status: int) -> None:
    message = json.dumps({"error": {"code": status, "message": "caller lacks storage.objects.get"}})
    scripted.script[OBJ] = [(status, message.encode())]
    with pytest.raises(StoreError, match=rf"^gs://bkt/p: GET .*\(HTTP {status}\): caller lacks storage.objects.get$"):
        gcs_store().get_chunk(CID, digest)
    assert len(scripted.requests_to(OBJ)) == 1


def test_timeout_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{silent.getsockname()[1]}")
        store = gcs_store(StoreOptions(timeout=0.3, error_retry=2, error_retry_base_interval=0.01))
        with pytest.raises(StoreError, match=r"gs://bkt/p: GET .*timed out"):
            store.has_chunk(CID)


def test_store_and_list_requests(scripted: Scripted) -> None:
    """The JSON API calls as spoken: media upload with the key in ``name``, listing by pages."""
    scripted.script["/upload/storage/v1/b/bkt/o"] = [(200, b"{}")]
    listing = "/storage/v1/b/bkt/o"
    name = f"p/{CID.hex()[:4]}/{CID.hex()}.cacnk"
    scripted.script[listing] = [(200, json.dumps({"items": [{"name": "p/x"}], "nextPageToken": "t/1"}).encode()),
                                (200, json.dumps({"items": [{"name": name}]}).encode())]
    store = gcs_store()
    from desync_ref.stores import Chunk
    store.store_chunk(Chunk(CID, data=DATA))
    method, path, headers, body = scripted.requests_to("/upload/storage/v1/b/bkt/o")[0]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert (method, query["uploadType"], query["name"]) == ("POST", ["media"], [name])
    assert body == compress(DATA) and "authorization" not in headers  # anonymous to an emulator
    assert list(store.chunk_ids()) == [CID]
    pages = [urllib.parse.parse_qs(urllib.parse.urlsplit(r[1]).query) for r in scripted.requests_to(listing)]
    assert [p.get("pageToken") for p in pages] == [None, ["t/1"]] and pages[0]["prefix"] == ["p/"]


# --- credentials ------------------------------------------------------------------------------

def _need_google_auth() -> None:
    try:
        import google.auth  # noqa: F401
    except ImportError:
        pytest.skip("google-auth is not installed (Python package 'google-auth', extra 'gcs')")


@pytest.fixture
def no_adc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where no credential is configured and this is not GCE."""
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gcloud").mkdir()
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(gcs_mod, "DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    return tmp_path


def _token_server(monkeypatch: pytest.MonkeyPatch, token: str) -> Scripted:
    server = Scripted()
    server.script["/token"] = [(200, json.dumps({"access_token": token, "expires_in": 3600,
                                                 "token_type": "Bearer"}).encode())]
    server.script[OBJ] = [(200, b'{"name":"p"}')]
    monkeypatch.setattr(gcs_mod, "GCS_ENDPOINT", server.url)
    return server


def test_service_account_key_signs_a_jwt(no_adc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_google_auth()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    server = _token_server(monkeypatch, "tok-sa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
            "client_email": "sa@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": server.url + "/token"}
    (no_adc / "sa.json").write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(no_adc / "sa.json"))
    store = gcs_store()
    try:
        assert store.has_chunk(CID) and store.has_chunk(CID)  # one token serves both
    finally:
        server.close()
    [(_, _, _, body)] = server.requests_to("/token")
    form = urllib.parse.parse_qs(body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    head, claims, signature = form["assertion"][0].split(".")

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    key.public_key().verify(unb64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    payload = json.loads(unb64(claims))
    # google-auth addresses the JWT to Google's token endpoint wherever it posts it
    assert (payload["iss"], payload["aud"], payload["scope"]) == (
        info["client_email"], "https://oauth2.googleapis.com/token", gcs_mod.SCOPE)
    assert [r[2].get("authorization") for r in server.requests_to(OBJ)] == ["Bearer tok-sa"] * 2


def test_gcloud_adc_file_refresh_token(no_adc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_google_auth()
    server = _token_server(monkeypatch, "tok-user")
    # google-auth sends every authorized_user refresh to Google's endpoint, whatever the file says
    monkeypatch.setattr("google.oauth2.credentials._GOOGLE_OAUTH2_TOKEN_ENDPOINT", server.url + "/token")
    (no_adc / "gcloud" / "application_default_credentials.json").write_text(json.dumps(
        {"type": "authorized_user", "client_id": "cid", "client_secret": "cs", "refresh_token": "rt",
         "token_uri": server.url + "/token"}))
    try:
        assert gcs_store().has_chunk(CID)
    finally:
        server.close()
    [(_, _, _, body)] = server.requests_to("/token")
    form = urllib.parse.parse_qs(body.decode())
    assert (form["grant_type"], form["refresh_token"]) == (["refresh_token"], ["rt"])
    assert [r[2].get("authorization") for r in server.requests_to(OBJ)] == ["Bearer tok-user"]


def _silent_metadata(monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{silent.getsockname()[1]}")
    return silent


def test_no_credentials_is_a_clear_error(no_adc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_google_auth()
    # the metadata probe meets a server that never answers
    with _silent_metadata(monkeypatch), pytest.raises(
            StoreError, match=r"^gs://bkt/p: no Google credentials found: set GOOGLE_APPLICATION"):
        gcs_store().has_chunk(CID)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(no_adc / "absent.json"))
    with pytest.raises(StoreError, match=r"^gs://bkt/p: cannot load Google credentials from .*absent\.json"):
        gcs_store().has_chunk(CID)


def test_no_credentials_cli(made: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_google_auth()
    try:
        on_gce = gcs_mod.DMI_PRODUCT_NAME.read_text().startswith("Google")
    except OSError:
        on_gce = False
    if on_gce:
        skip_not_component("this machine is a GCE VM: its metadata server gives credentials")
    with _silent_metadata(monkeypatch) as silent:
        env = {k: v for k, v in os.environ.items()
               if k not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST")}
        env.update(CLOUDSDK_CONFIG=str(tmp_path), HOME=str(tmp_path),
                   GCE_METADATA_IP=f"127.0.0.1:{silent.getsockname()[1]}")
        proc = run(None, "extract", "-s", f"gs://{BUCKET}/store", made["index"], tmp_path / "out",
                   env=env, check=False, timeout=30)  # fails the test if the probe hangs
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and f"gs://{BUCKET}/store: no Google credentials found" in err


def test_google_auth_missing_names_the_extra(no_adc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)  # import fails as if not installed
    with pytest.raises(StoreError, match=r"google-auth package \(pip install 'desync-ref\[gcs\]'\)"):
        gcs_store().has_chunk(CID)


def test_locations() -> None:
    parse: Callable[[str], tuple[str, str]] = gcs_mod.parse_location
    assert parse("gs://b") == ("b", "") and parse("gs://b/") == ("b", "")
    assert parse("gs://b//x/y//") == ("b", "x/y/") and parse("GS://b/a%20b") == ("b", "a b/")
    assert gcs_mod.split_index_location("gs://b/p/q/x.caibx") == ("gs://b/p/q", "x.caibx")
    assert gcs_mod.split_index_location("gs://b/x.caibx") == ("gs://b", "x.caibx")
    for bad in ("gs:///p", "gs://"):
        with pytest.raises(StoreError, match="no bucket name"):
            parse(bad)
    with pytest.raises(StoreError, match="names no index"):
        gcs_mod.split_index_location("gs://b/p/")
