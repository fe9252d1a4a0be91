"""Write the committed seed corpus ``fuzz/corpus/<target>/`` from ``fixtures/`` plus a few
hand-made edge cases. Deterministic: run it again and the files come out the same.

    python fuzz/make_corpus.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import shutil
import struct
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desync_ref.formats import constants as c  # noqa: E402
from desync_ref.formats.chunk import compress  # noqa: E402
from desync_ref.formats.index import Index, IndexChunk, encode_index  # noqa: E402
from desync_ref.formats.tarstream import write_catar_from_tar  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"
FIX = ROOT / "fixtures"
PEER = FIX / "desync"


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for info, data in members:
            info.mtime = 1_600_000_000
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **kw: object) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.size = kind, size
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def tar_streams() -> dict[str, bytes]:
    hello = b"hello\n"
    streams = {
        "ustar-basic.tar": _tar([(_info("./", tarfile.DIRTYPE, mode=0o755), None),
                                 (_info("./a.txt", size=len(hello), mode=0o644), hello),
                                 (_info("./d/b", size=0, mode=0o600, uid=1000, gid=1000), b"")],
                                tarfile.USTAR_FORMAT),
        "gnu-special.tar": _tar([(_info("dir", tarfile.DIRTYPE, mode=0o700), None),
                                 (_info("dir/link", tarfile.SYMTYPE, linkname="../../etc/passwd"), None),
                                 (_info("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
                                 (_info("blk", tarfile.BLKTYPE, devmajor=8, devminor=0), None),
                                 (_info("fifo", tarfile.FIFOTYPE), None),
                                 (_info("f", size=3), b"abc"),
                                 (_info("hard", tarfile.LNKTYPE, linkname="f"), None),
                                 (_info("x" * 150 + "/long", size=1), b"L")]),
        "pax-xattrs.tar": _tar([(_info("p", size=2, pax_headers={
            "SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.selinux": "system_u:object_r:x:s0",
            "mtime": "1600000000.123456789", "uname": "user", "gname": "group"}), b"pp"),
            (_info("q", tarfile.DIRTYPE, pax_headers={"mtime": "5.5"}), None)], tarfile.PAX_FORMAT),
        "empty.tar": _tar([]),
    }
    streams["basic.tar.gz"] = gzip.compress(streams["ustar-basic.tar"], mtime=0)
    streams["basic.tar.xz"] = lzma.compress(streams["ustar-basic.tar"])
    return streams


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)

    # index: golden caibx (a spread of sizes), desync's, casync's caidx, edge cases.
    goldens = sorted((FIX / "golden").glob("*.caibx"))
    for p in goldens[::4]:
        put("index", p.name, p.read_bytes())
    for p in (PEER / "testdata" / "index.caibx", PEER / "testdata" / "chunker.index",
              FIX / "catar" / "golden" / "basic-default.caidx"):
        put("index", p.name, p.read_bytes())
    flags = c.CA_FORMAT_SHA512_256 | c.CA_FORMAT_EXCLUDE_NODUMP
    empty = Index(flags, 16384, 65536, 262144, [])
    put("index", "empty-table.caibx", encode_index(empty))
    one = Index(flags, 64, 64, 64, [IndexChunk(0, 64, bytes(range(32)))])
    put("index", "min-sizes-one-chunk.caibx", encode_index(one))
    put("index", "truncated.caibx", encode_index(one)[:-1])

    # catar: goldens of each tree (one flag set each), desync's archives, archives from tars.
    catars: dict[str, bytes] = {}
    for name in ("awkward-default", "deep-unix", "basic-16bit-readonly", "basic-best", "wide-default"):
        catars[name + ".catar"] = (FIX / "catar" / "golden" / f"{name}.catar").read_bytes()
    for name in ("flat", "flatdir", "nested", "complex"):
        catars[name + ".catar"] = (PEER / "testdata" / f"{name}.catar").read_bytes()
    tars = tar_streams()
    for name in ("gnu-special.tar", "pax-xattrs.tar", "empty.tar"):
        out = io.BytesIO()
        write_catar_from_tar("-", out.write, c.CA_FORMAT_WITH_BEST | c.CA_FORMAT_SHA512_256,
                             stream=io.BytesIO(tars[name]))
        catars[name.replace(".tar", "-from-tar.catar")] = out.getvalue()
    catars["truncated.catar"] = catars["nested.catar"][:-17]
    for target in ("catar_decoder", "catar_sinks", "untar"):
        for name, data in catars.items():
            if target == "untar" and name.startswith("wide"):
                continue  # slow to restore; its records are in the other seeds
            put(target, name, data)

    # chunk: the smallest chunk files of the fixture stores, and other encodings.
    stores = [FIX / "catar" / "golden" / "basic-default.store", PEER / "cmd" / "desync" / "testdata" / "blob1.store"]
    files = sorted((p for s in stores for p in s.rglob("*.cacnk")), key=lambda p: (p.stat().st_size, p.name))
    for p in files[:4] + files[-1:]:
        put("chunk", p.name, p.read_bytes())
    data = b"chunk data " * 50
    put("chunk", "empty.zst", compress(b""))
    put("chunk", "xz.cacnk", lzma.compress(data))
    put("chunk", "gzip.cacnk", gzip.compress(data, mtime=0))
    put("chunk", "two-frames.zst", compress(data) + compress(data))
    put("chunk", "trailing.zst", compress(data) + b"\0")
    import zstandard
    put("chunk", "with-content-size.zst", zstandard.ZstdCompressor(write_content_size=True).compress(data))

    # tar streams: hand-made ones and desync's GNU tar output.
    for name, data in tars.items():
        put("tarstream", name, data)
    put("tarstream", "complex.gnu-tar", (PEER / "testdata" / "complex.gnu-tar").read_bytes())

    # HTTP paths and listen addresses / location globs.
    cid = hashlib.sha256(b"x").hexdigest()
    paths = {
        "chunk": f"/{cid[:4]}/{cid}.cacnk", "chunk-rel": f"{cid[:4]}/{cid}.cacnk",
        "uncompressed": f"/{cid[:4]}/{cid}", "upper": f"/{cid[:4].upper()}/{cid.upper()}.cacnk",
        "extra-ext": f"/{cid[:4]}/{cid}.cacnk.x", "bad-prefix": f"/ffff/{cid}.cacnk",
        "index-name": "/blob1.caibx", "dotdot": "/../x.caibx",
        "nul": "/a\0b",
    }
    for name, text in paths.items():
        put("http_paths", name, text.encode())
    for name, text in {"127.0.0.1_8080": "127.0.0.1:8080", "_http": ":http", "v6": "[::1]:443",
                       "localhost_0": "localhost:0", "too-large": ":65536"}.items():
        put("listen_address", name, text.encode())
    for name, text in {"glob": "/srv/*/store\n/srv/a/store", "class": "/srv/st[a-z]re\n/srv/store",
                       "url": "http://host/st[^a]re/\nhttp://host/store", "escape": "/a\\*\n/a*",
                       "bad-class": "/a[\n/a["}.items():
        put("location_glob", name, text.encode())

    # config files.
    configs = {
        "full.json": {"s3-credentials": {"http://localhost": {"access-key": "a", "secret-key": "s"}},
                      "store-options": {"/path/to/store/": {"n": 4, "uncompressed": True, "timeout": 0,
                                                            "error-retry": 2, "skip-verify": False},
                                        "https://*.example.com/*": {"http-auth": "Bearer x",
                                                                    "timeout": -1, "trust-insecure": True,
                                                                    "ca-cert": "/c", "client-cert": "/x",
                                                                    "client-key": "/k",
                                                                    "error-retry-base-interval": 5}}},
        "empty.json": {},
        "null-sections.json": {"s3-credentials": None, "oci-credentials": None, "store-options": None},
        "overlap.json": {"store-options": {"/var/*": {"n": 1}, "/var/store": {"n": 2}}},
    }
    for name, value in configs.items():
        put("config", name, json.dumps(value, indent=2).encode())
    put("config", "bad-type.json", b'{"store-options": {"/x": {"n": "4"}}}')
    put("config", "not-object.json", b"[1, 2]")

    # casync protocol streams: both directions captured from casync 2, and a few odd ones.
    from desync_ref.formats import casync_protocol as cp

    vectors = ROOT / "fixtures" / "casync_protocol"
    for name in ("client", "server", "missing"):
        put("casync_protocol", f"casync-{name}.bin", (vectors / f"{name}.bin").read_bytes())
    put("casync_protocol", "abort", cp.encode(cp.Hello(1)) + cp.encode(cp.Abort(5, "disk on fire")))
    put("casync_protocol", "huge-size", struct.pack("<QQ", 1 << 62, cp.CHUNK))
    put("casync_protocol", "banner", b"SSH-2.0-OpenSSH_9.2\r\n")

    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    count = sum(1 for p in CORPUS.rglob("*") if p.is_file())
    print(f"{count} files, {total} bytes in {CORPUS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
