"""OCI registry chunk stores (``oci+http://``) against a real registry: Debian's
docker-registry (CNCF distribution 2.8), started once per session by ``oci_registry_server``.

Checked: make/extract through a registry (index equal to a local make's, bytes restored),
the registry as ``-c`` cache, ``cache`` and ``chop`` into it, the manifest bytes desync
writes (built here by hand from desync ``oci.go``: Go's field order of ``ocispec.Manifest``),
a chunk pushed the desync way read back, prune through the library, the uncompressed form,
errors (registry down, unknown repository, credentials) and a chunk-server in front.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_clean_failure
from httputil import Server, free_port
from oci_registry_server import Registry

from desync_ref.errors import ChunkMissing, StoreError
from desync_ref.formats.chunk import compress, digest_function
from desync_ref.formats.index import parse_index
from desync_ref.stores import Chunk, PruneStore
from desync_ref.stores.oci import OCIStore, open_chunk_store
from desync_ref.stores.options import StoreOptions

pytestmark = pytest.mark.compiled_pass_only

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIZES = "16:64:256"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(args: list[str | os.PathLike[str]], *, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """The CLI with a clean credential environment (no Docker config, no desync config)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("DOCKER_CONFIG", "DESYNC_OCI_USERNAME", "DESYNC_OCI_PASSWORD")}
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], capture_output=True,
                          env={**base, "HOME": str(_HOME), **(env or {})}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


_HOME = Path("/nonexistent-home")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty HOME for the CLI: no ~/.docker/config.json, no desync config."""
    global _HOME
    _HOME = tmp_path_factory.mktemp("home")
    yield _HOME


def http(method: str, url: str, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def push_blob(base: str, repo: str, data: bytes) -> str:
    status, headers, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    location += ("&" if "?" in location else "?") + "digest=" + sha256(data)
    status, _, _ = http("PUT", location if location.startswith("http") else base + location, data,
                        {"Content-Type": "application/octet-stream"})
    assert status == 201
    return sha256(data)


def desync_manifest(tag: str, blob: bytes) -> bytes:
    """The manifest desync ``StoreChunk`` writes, spelled out: Go's json.Marshal of
    ocispec.Manifest (schemaVersion, mediaType, artifactType, config, layers, annotations)."""
    return (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        '"artifactType":"application/vnd.desync.chunk.v1",'
        '"config":{"mediaType":"application/vnd.oci.empty.v1+json",'
        '"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},'
        f'"layers":[{{"mediaType":"application/octet-stream","digest":"{sha256(blob)}","size":{len(blob)}}}],'
        f'"annotations":{{"org.opencontainers.image.title":"{tag}"}}}}'
    ).encode()


def push_desync_way(base: str, repo: str, tag: str, blob: bytes, artifact: bool = True) -> bytes:
    """What desync's StoreChunk sends: config blob, chunk blob, manifest under the tag."""
    push_blob(base, repo, b"{}")
    push_blob(base, repo, blob)
    body = desync_manifest(tag, blob)
    if not artifact:
        body = body.replace(b"application/vnd.desync.chunk.v1", b"application/vnd.example.other")
    status, headers, _ = http("PUT", f"{base}/v2/{repo}/manifests/{tag}", body, {"Content-Type": OCI_MANIFEST})
    assert status == 201 and headers["Docker-Content-Digest"] == sha256(body)
    return body


def manifest_of(base: str, repo: str, tag: str) -> bytes:
    status, _, body = http("GET", f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert status == 200, (status, body)
    return body


def tags_of(base: str, repo: str) -> set[str]:
    status, _, body = http("GET", f"{base}/v2/{repo}/tags/list")
    assert status == 200, body
    return set(json.loads(body)["tags"] or [])


def index_ids(path: Path) -> set[bytes]:
    return {c.id for c in parse_index(path.read_bytes()).chunks}


@pytest.fixture(scope="module")
def made(oci_registry: Registry, home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """One blob made into a registry repository (and into a local store for comparison)."""
    work = tmp_path_factory.mktemp("oci-made")
    blob = work / "blob"
    blob.write_bytes(random.Random(10).randbytes(400 * 1024))
    location = oci_registry.location("made/store")
    run(["make", "-m", SIZES, "-s", location, work / "oci.caibx", blob])
    run(["make", "-m", SIZES, "-s", work / "local", work / "local.caibx", blob])
    return {"work": work, "blob": blob, "location": location}


def test_make_extract_through_registry(made: dict[str, Path | str], oci_registry: Registry) -> None:
    work, blob = Path(made["work"]), Path(made["blob"])
    assert (work / "oci.caibx").read_bytes() == (work / "local.caibx").read_bytes()
    ids = index_ids(work / "oci.caibx")
    assert len(ids) > 3
    assert tags_of(oci_registry.url, "made/store") == {i.hex() + ".cacnk" for i in ids}
    run(["extract", "-s", made["location"], work / "oci.caibx", work / "out"])
    assert (work / "out").read_bytes() == blob.read_bytes()
    store = open_chunk_store(str(made["location"]), StoreOptions())
    assert isinstance(store, PruneStore)
    assert set(store.chunk_ids()) == ids


def test_registry_as_cache_then_cache_and_chop(made: dict[str, Path | str], oci_registry: Registry) -> None:
    work, blob = Path(made["work"]), Path(made["blob"])
    ids = index_ids(work / "local.caibx")
    cache = oci_registry.location("cache/extract")
    run(["extract", "-s", work / "local", "-c", cache, work / "local.caibx", work / "via-cache"])
    assert (work / "via-cache").read_bytes() == blob.read_bytes()
    assert tags_of(oci_registry.url, "cache/extract") == {i.hex() + ".cacnk" for i in ids}
    # the chunks now come from the cache alone
    (work / "empty-store").mkdir()
    run(["extract", "-s", work / "empty-store", "-c", cache, work / "local.caibx", work / "from-cache"])
    assert (work / "from-cache").read_bytes() == blob.read_bytes()

    run(["cache", "-s", work / "local", "-c", oci_registry.location("cache/cmd"), work / "local.caibx"])
    run(["chop", "-s", oci_registry.location("cache/chop"), work / "local.caibx", blob])
    for repo in ("cache/cmd", "cache/chop"):
        assert tags_of(oci_registry.url, repo) == {i.hex() + ".cacnk" for i in ids}
        run(["extract", "-s", oci_registry.location(repo), work / "local.caibx", work / f"out-{repo[6:]}"])
        assert (work / f"out-{repo[6:]}").read_bytes() == blob.read_bytes()


def test_manifest_is_desync_bytes_and_desync_chunks_are_read(oci_registry: Registry) -> None:
    base, repo = oci_registry.url, "compat/store"
    store = open_chunk_store(oci_registry.location(repo), StoreOptions())
    data = random.Random(1).randbytes(3000)
    chunk_id = hashlib.new("sha512_256", data).digest()
    store.store_chunk(Chunk(chunk_id, data=data))
    tag = chunk_id.hex() + ".cacnk"
    assert manifest_of(base, repo, tag) == desync_manifest(tag, compress(data))
    status, _, got = http("GET", f"{base}/v2/{repo}/blobs/{sha256(compress(data))}")
    assert status == 200 and got == compress(data)

    # a chunk pushed as desync pushes it is read by us
    other = random.Random(2).randbytes(5000)
    other_id = hashlib.new("sha512_256", other).digest()
    push_desync_way(base, repo, other_id.hex() + ".cacnk", compress(other))
    assert store.has_chunk(other_id)
    assert store.get_chunk(other_id, digest_function("sha512-256")).data() == other


def test_prune_uncompressed_tags_and_foreign_artifacts(oci_registry: Registry) -> None:
    base, repo = oci_registry.url, "prune/store"
    location = oci_registry.location(repo)
    compressed = open_chunk_store(location, StoreOptions())
    plain = open_chunk_store(location, StoreOptions(uncompressed=True))
    datas = [random.Random(20 + i).randbytes(2000 + i) for i in range(4)]
    ids = [hashlib.new("sha512_256", d).digest() for d in datas]
    for chunk_id, data in zip(ids, datas, strict=True):
        compressed.store_chunk(Chunk(chunk_id, data=data))
    plain.store_chunk(Chunk(ids[0], data=datas[0]))
    # uncompressed: the tag is the bare id and the blob the plain bytes
    assert manifest_of(base, repo, ids[0].hex()) == desync_manifest(ids[0].hex(), datas[0])
    # a foreign artifact under a chunk-shaped tag, and an ordinary tag
    foreign = hashlib.new("sha512_256", b"foreign").digest()
    push_desync_way(base, repo, foreign.hex() + ".cacnk", b"not a chunk", artifact=False)
    push_desync_way(base, repo, "latest", b"something else", artifact=False)
    assert not compressed.has_chunk(foreign)
    with pytest.raises(ChunkMissing):
        compressed.get_chunk(foreign, None)

    assert set(compressed.chunk_ids()) == {*ids, foreign}
    assert set(plain.chunk_ids()) == {ids[0]}
    removed = compressed.prune({ids[1]})
    assert removed == 3
    assert tags_of(base, repo) == {ids[1].hex() + ".cacnk", ids[0].hex(), foreign.hex() + ".cacnk", "latest"}
    assert plain.get_chunk(ids[0], None).data() == datas[0]
    compressed.remove_chunk(ids[1])
    compressed.remove_chunk(ids[1])  # absent: nothing to do
    assert not compressed.has_chunk(ids[1])


def test_tag_listing_follows_pages() -> None:
    """Registry 2.8 ignores ``n`` and sends one page, so the pages come from a stand-in that
    pages as the distribution spec says (``Link: <…?last=…>; rel="next"``, relative)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ids = [hashlib.new("sha512_256", bytes([i])).digest() for i in range(5)]
    tags = sorted([i.hex() + ".cacnk" for i in ids] + ["latest", ids[0].hex()])
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            asked.append(self.path)
            last = query.get("last", [""])[0]
            rest = [t for t in tags if t > last]
            page, more = rest[:2], rest[2:]
            body = json.dumps({"name": "r/s", "tags": page}).encode()
            self.send_response(200)
            if more:
                self.send_header("Link", f'</v2/r/s/tags/list?last={page[-1]}&n=2>; rel="next"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = OCIStore(f"oci+http://127.0.0.1:{server.server_address[1]}/r/s")
        assert sorted(store.chunk_ids()) == sorted(ids)
        assert asked[0] == "/v2/r/s/tags/list?n=1000" and len(asked) == 4
    finally:
        server.shutdown()
        server.server_close()


def test_errors_name_the_store(made: dict[str, Path | str], oci_registry: Registry) -> None:
    work = Path(made["work"])
    down = f"oci+http://127.0.0.1:{free_port()}/some/repo"
    proc = run(["extract", "--error-retry", "1", "-s", down, work / "local.caibx", work / "x"], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and down in err and "refused" in err.lower(), err

    unknown = oci_registry.location("no/such/repo")
    proc = run(["extract", "-s", unknown, work / "local.caibx", work / "y"], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and "not found in " + unknown in err, err
    with pytest.raises(StoreError, match=r"repository 'no/such/repo' not known to the registry"):
        list(OCIStore(unknown).chunk_ids())

    proc = run(["extract", "-s", oci_registry.location("Upper/Case"), work / "local.caibx", work / "z"], check=False)
    assert "repository name 'Upper/Case'" in assert_clean_failure(proc)


def test_chunk_server_in_front_of_registry(made: dict[str, Path | str]) -> None:
    work, blob = Path(made["work"]), Path(made["blob"])
    with Server("chunk-server", ["-s", str(made["location"])]) as server:
        run(["extract", "-s", server.url, work / "oci.caibx", work / "via-server"])
    assert (work / "via-server").read_bytes() == blob.read_bytes()


def test_credentials(oci_registry_auth: Registry, made: dict[str, Path | str], home: Path) -> None:
    work, blob = Path(made["work"]), Path(made["blob"])
    reg = oci_registry_auth
    location = reg.location("auth/store")
    index = work / "local.caibx"
    # no credentials: refused, one line naming the store
    proc = run(["cache", "-s", work / "local", "-c", location, index], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and location in err and "unauthorized" in err, err

    # from the config file (a glob key, as desync matches it)
    config = work / "oci-config.json"
    config.write_text(json.dumps({"oci-credentials": {
        f"oci+http://{reg.hostport}/auth/*": {"username": reg.user, "secret": reg.password}}}))
    run(["--config", config, "cache", "-s", work / "local", "-c", location, index])
    run(["--config", config, "extract", "-s", location, index, work / "auth-out"])
    assert (work / "auth-out").read_bytes() == blob.read_bytes()

    # wrong secret in the config file
    config.write_text(json.dumps({"oci-credentials": {
        location: {"username": reg.user, "secret": "wrong"}}}))
    proc = run(["--config", config, "extract", "-s", location, index, work / "w"], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and location in err and "unauthorized" in err and "wrong" not in err, err

    # from the Docker config file
    docker = work / "docker"
    docker.mkdir()
    token = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {reg.hostport: {"auth": token}}}))
    run(["extract", "-s", location, index, work / "docker-out"], env={"DOCKER_CONFIG": str(docker)})
    assert (work / "docker-out").read_bytes() == blob.read_bytes()
    # ... and the legacy key form under ~/.docker
    (home / ".docker").mkdir(exist_ok=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {f"http://{reg.hostport}/v1/": {"auth": token}}}))
    try:
        run(["extract", "-s", location, index, work / "home-out"])
    finally:
        (home / ".docker" / "config.json").unlink()
    assert (work / "home-out").read_bytes() == blob.read_bytes()

    # the environment wins over both
    proc = run(["--config", config, "extract", "-s", location, index, work / "env-out"],
               env={"DESYNC_OCI_USERNAME": reg.user, "DESYNC_OCI_PASSWORD": reg.password})
    assert (work / "env-out").read_bytes() == blob.read_bytes()
    proc = run(["extract", "-s", location, index, work / "e"], env={"DESYNC_OCI_PASSWORD": "x"}, check=False)
    assert "DESYNC_OCI_PASSWORD is set without DESYNC_OCI_USERNAME" in assert_clean_failure(proc)


def test_config_refuses_unknown_credential_keys(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"oci-credentials": {"oci+https://r/x": {"username": "u", "password": "p"}}}))
    proc = run(["--config", config, "config"], check=False)
    assert 'oci-credentials "oci+https://r/x": unknown key "password"' in assert_clean_failure(proc)
    config.write_text(json.dumps({"oci-credentials": {"oci+https://r/x": {"secret": "s", "username": "u"}}}))
    out = json.loads(run(["--config", config, "config"]).stdout)
    assert list(out["oci-credentials"]["oci+https://r/x"]) == ["username", "secret"]


class _TokenProxy:
    """A Bearer-token front for the registry (as Docker Hub or ghcr.io do it): /v2/ requests
    need ``Bearer <token>``, else 401 with a challenge naming /token; /token wants Basic
    user:secret and hands out the token; everything else is passed to the registry."""

    TOKEN = "tok-3f9a"

    def __init__(self, upstream: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.scopes: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.path.startswith("/token?"):
                    want = "Basic " + base64.b64encode(b"robot:hunter2").decode()
                    if self.headers.get("Authorization") != want:
                        self._reply(401, {}, b"")
                        return
                    proxy.scopes.append(urllib.parse.parse_qs(self.path.split("?", 1)[1])["scope"][0])
                    self._reply(200, {"Content-Type": "application/json"}, json.dumps({"token": proxy.TOKEN}).encode())
                    return
                if self.headers.get("Authorization") != f"Bearer {proxy.TOKEN}":
                    realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
                    repo = self.path.split("/")[2:4]
                    challenge = f'Bearer realm="{realm}",service="test",scope="repository:{"/".join(repo)}:pull"'
                    self._reply(401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
                status, got_headers, data = http(self.command, upstream + self.path, body, headers)
                self._reply(status, got_headers, data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_flow(oci_registry: Registry, made: dict[str, Path | str]) -> None:
    work = Path(made["work"])
    proxy = _TokenProxy(oci_registry.url)
    try:
        location = f"oci+http://{proxy.hostport}/made/store"
        anonymous = OCIStore(location)
        ids = index_ids(work / "oci.caibx")
        with pytest.raises(StoreError, match=r"token request to http://127\.0\.0\.1:\d+/token: credentials refused"):
            anonymous.has_chunk(next(iter(ids)))
        creds = {location: {"username": "robot", "secret": "hunter2"}}
        store = OCIStore(location, StoreOptions(oci_credentials=creds))
        assert set(store.chunk_ids()) == ids
        for chunk_id in ids:
            assert store.get_chunk(chunk_id, digest_function("sha512-256")).id == chunk_id
        assert proxy.scopes == ["repository:made/store:pull"]  # one token, reused
    finally:
        proxy.close()
