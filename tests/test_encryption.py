"""Chunk encryption (spec/store.md "Chunk encryption"): the test vectors checked by
independent AEAD implementations, encrypted local stores through the CLI, chunk-server's
encryption flags, and the refusals (no key, bad key, index stores)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import urllib3
from conftest import ROOT, assert_clean_failure, run_cli
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from httputil import Server
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from desync_ref.errors import ChunkInvalid, InvalidParameter
from desync_ref.formats.chunk import ZSTD_MAGIC, chunk_file_name, decompress, digest_function
from desync_ref.formats.encryption import ChunkCipher, chunk_cipher, parse_key
from desync_ref.formats.index import parse_index
from desync_ref.stores.options import StoreOptions
from desync_ref.stores.storage_form import storage_form

pytestmark = pytest.mark.compiled_pass_only

# desync encrypt_test.go testEncryptionKey / otherEncryptionKey
KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
OTHER_KEY = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"
SHA512_256 = digest_function("sha512-256")

PLAIN = b"desync_ref chunk encryption test vector\n"
CHUNK_ID = "69a5aff36d46deeee91cb77dd7d14545bde8f13b1f538018efcf01dfdc996a48"
ZSTD_FORM = "28b52ffd0000410100646573796e635f726566206368756e6b20656e6372797074696f6e207465737420766563746f720a"
# (algorithm, nonce, stored bytes of the compressed form, of the plain form): spec/store.md
VECTORS = [
    ("xchacha20-poly1305", "000102030405060708090a0b0c0d0e0f1011121314151617",
     "000102030405060708090a0b0c0d0e0f10111213141516179d7ba9ef75ad5f12d9ad5dec3fd85ec01efe10d12c06802c"
     "6237383830e35036ea3c85a1412c5b306fd341b9b8b5156ad2f35cb755191ad25bbd50fb9df2f5630b",
     "000102030405060708090a0b0c0d0e0f1011121314151617d1abf56b1bce4161bcaf18fc2ec353f44cfe18923d178536"
     "6078337627f45a32be238fac15374c49da45376415dd571f9c0f0d0fc55412f1"),
    ("aes-256-gcm", "000102030405060708090a0b",
     "000102030405060708090a0bda3d856b64834df0f8e6865cbba555d187a217d59dad3636b925e89b3afa5a64c8e40024"
     "1bba70b9f004baf5c85056633422391959f4d7cf35cbc6143c5671d9ba",
     "000102030405060708090a0b96edd9ef0ae053839de4c34caabe58e5d5a21f968cbc332cbb6ae3d52ded50609cfb0a29"
     "4fa167c04d337d2bd5d1795178b24e7c8a15503f"),
]


def ref_seal(algorithm: str, key: bytes, nonce: bytes, plain: bytes) -> bytes:
    """Independent implementations: libsodium (PyNaCl) and OpenSSL (cryptography)."""
    if algorithm == "xchacha20-poly1305":
        return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plain, None, nonce, key)
    return nonce + AESGCM(key).encrypt(nonce, plain, None)


def ref_open(algorithm: str, key: bytes, blob: bytes) -> bytes:
    if algorithm == "xchacha20-poly1305":
        return crypto_aead_xchacha20poly1305_ietf_decrypt(blob[24:], None, blob[:24], key)
    return AESGCM(key).decrypt(blob[:12], blob[12:], None)


def ref_extension(algorithm: str, key_hex: str) -> str:
    return f".{algorithm}-{hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:8]}"


# --- the cipher core and the vectors --------------------------------------------------------

@pytest.mark.parametrize(("algorithm", "nonce", "stored", "stored_plain"), VECTORS)
def test_vectors(algorithm: str, nonce: str, stored: str, stored_plain: str) -> None:
    key, nonce_b = bytes.fromhex(KEY), bytes.fromhex(nonce)
    assert SHA512_256(PLAIN).hex() == CHUNK_ID
    # the vector is what an independent implementation makes of the same inputs
    assert ref_seal(algorithm, key, nonce_b, bytes.fromhex(ZSTD_FORM)).hex() == stored
    assert ref_seal(algorithm, key, nonce_b, PLAIN).hex() == stored_plain
    # and what the code under test makes and reads
    cipher = chunk_cipher(algorithm, KEY)
    assert cipher.seal(bytes.fromhex(ZSTD_FORM), nonce_b).hex() == stored
    assert cipher.open(bytes.fromhex(stored)).hex() == ZSTD_FORM
    for uncompressed, blob in ((False, stored), (True, stored_plain)):
        form = storage_form(StoreOptions(encryption=True, encryption_key=KEY, encryption_algorithm=algorithm,
                                         uncompressed=uncompressed))
        assert form.extension == (".cacnk" if not uncompressed else "") + ref_extension(algorithm, KEY)
        assert form.from_storage(bytes.fromhex(CHUNK_ID), bytes.fromhex(blob), SHA512_256).data() == PLAIN
        # random nonces: the stored bytes differ each time, and the reference opens them
        sealed = form.to_storage(form.from_storage(bytes.fromhex(CHUNK_ID), bytes.fromhex(blob), None))
        assert sealed != bytes.fromhex(blob)
        opened = ref_open(algorithm, key, sealed)
        assert (opened if uncompressed else decompress(opened)) == PLAIN
    # desync's own expectation (encrypt_test.go TestAES256GCMExtension)
    assert chunk_cipher("aes-256-gcm", KEY).extension == ".aes-256-gcm-50d64035"
    # the spec carries the vectors other implementations check themselves against
    spec = (ROOT / "spec" / "store.md").read_text()
    name = chunk_file_name(bytes.fromhex(CHUNK_ID), ".cacnk" + ref_extension(algorithm, KEY))
    assert stored in spec and stored_plain in spec and name in spec


@pytest.mark.parametrize("algorithm", ["xchacha20-poly1305", "aes-256-gcm"])
def test_open_refuses_wrong_key_and_damage(algorithm: str) -> None:
    blob = chunk_cipher(algorithm, KEY).seal(b"some chunk bytes")
    for cipher, bad in ((chunk_cipher(algorithm, OTHER_KEY), blob),
                        (chunk_cipher(algorithm, KEY), blob[:-1] + bytes([blob[-1] ^ 1])),
                        (chunk_cipher(algorithm, KEY), blob[:20]),
                        (chunk_cipher("aes-256-gcm" if algorithm != "aes-256-gcm" else "xchacha20-poly1305",
                                      KEY), blob)):
        with pytest.raises(ChunkInvalid, match=r"wrong .*algorithm"):
            cipher.open(bad)


@pytest.mark.parametrize(("key", "needle"), [
    ("00" * 31, "must be 32 bytes, got 31"),
    ("00" * 33, "must be 32 bytes, got 33"),
    ("zz" * 32, "expected a hex-encoded 256-bit key"),
    ("0" * 63, "expected a hex-encoded 256-bit key"),
    (" " + "00" * 32, "expected a hex-encoded 256-bit key"),
])
def test_bad_keys(key: str, needle: str) -> None:
    with pytest.raises(InvalidParameter, match=needle):
        parse_key(key)
    with pytest.raises(InvalidParameter, match=needle):
        storage_form(StoreOptions(encryption=True, encryption_key=key), "/some/store")
    assert parse_key(KEY.upper()) == bytes.fromhex(KEY)


def test_options_checked() -> None:
    with pytest.raises(InvalidParameter, match='unsupported encryption algorithm "rot13"'):
        storage_form(StoreOptions(encryption=True, encryption_key=KEY, encryption_algorithm="rot13"))
    with pytest.raises(InvalidParameter, match="without setting encryption to true"):
        storage_form(StoreOptions(encryption_key=KEY))
    with pytest.raises(InvalidParameter, match="without setting encryption to true"):
        storage_form(StoreOptions(encryption_algorithm="aes-256-gcm"))
    with pytest.raises(InvalidParameter):
        ChunkCipher("xchacha20-poly1305", b"short")
    assert not storage_form(StoreOptions()).encrypted


# --- encrypted local stores through the CLI -------------------------------------------------

def write_config(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"store-options": entries}))
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One blob made into an encrypted store (key in the config), once for the module."""
    base = tmp_path_factory.mktemp("enc")
    blob = base / "blob"
    blob.write_bytes(os.urandom(300_000))
    store = base / "store"
    cfg = write_config(base / "cfg.json", {str(store): {"encryption": True, "encryption-key": KEY}})
    run_cli(["--config", cfg, "make", "-m", "16:64:256", "-s", store, base / "x.caibx", blob])
    return {"base": base, "blob": blob, "store": store, "cfg": cfg, "index": base / "x.caibx"}


def chunk_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file())


def test_make_extract_encrypted_store(made: dict[str, Path], tmp_path: Path) -> None:
    ids = {c.id.hex() for c in parse_index(made["index"].read_bytes()).chunks}
    files = chunk_files(made["store"])
    ext = ".cacnk" + ref_extension("xchacha20-poly1305", KEY)
    assert {f.name for f in files} == {i + ext for i in ids}
    key = bytes.fromhex(KEY)
    for f in files:
        blob = f.read_bytes()
        assert not blob.startswith(ZSTD_MAGIC)
        # an independent implementation opens it: a zstd frame of bytes that hash to the id
        data = decompress(ref_open("xchacha20-poly1305", key, blob))
        assert SHA512_256(data).hex() == f.name[:64]
    out = tmp_path / "out"
    run_cli(["--config", made["cfg"], "extract", "-s", made["store"], made["index"], out])
    assert out.read_bytes() == made["blob"].read_bytes()


def test_key_from_environment(made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "cfg.json", {str(made["store"]): {"encryption": True}})
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", KEY)
    out = tmp_path / "out"
    run_cli(["--config", cfg, "extract", "-s", made["store"], made["index"], out])
    assert out.read_bytes() == made["blob"].read_bytes()
    # the variable alone does not turn encryption on: without the config entry the
    # store's chunks are not its form
    err = assert_clean_failure(run_cli(["extract", "-s", made["store"], made["index"], tmp_path / "o2"],
                                       check=False))
    assert "not found" in err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("entry", [{"encryption-key": OTHER_KEY},
                                   {"encryption-key": KEY, "encryption-algorithm": "aes-256-gcm"}],
                         ids=["wrong-key", "wrong-algorithm"])
def test_wrong_key_or_algorithm(made: dict[str, Path], tmp_path: Path, entry: dict[str, str]) -> None:
    cfg = write_config(tmp_path / "cfg.json", {str(made["store"]): {"encryption": True, **entry}})
    out = tmp_path / "out"
    proc = run_cli(["--config", cfg, "extract", "-s", made["store"], made["index"], out], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1
    assert str(made["store"]) in err and "wrong encryption key or algorithm?" in err, err
    assert ".cacnk.xchacha20-poly1305-50d64035" in err
    assert not out.exists()


def test_damaged_chunk_is_not_output(made: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    cfg = write_config(tmp_path / "cfg.json", {str(store): {"encryption": True, "encryption-key": KEY}})
    victim = chunk_files(made["store"])[0]
    for f in chunk_files(made["store"]):
        target = store / f.relative_to(made["store"])
        target.parent.mkdir(exist_ok=True)
        blob = f.read_bytes()
        target.write_bytes(blob[:30] + bytes([blob[30] ^ 1]) + blob[31:] if f == victim else blob)
    out = tmp_path / "out"
    # trusted reads too (--skip-verify-read is not a way to get the bytes out)
    proc = run_cli(["--config", cfg, "extract", "-s", store, made["index"], out], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 1 and not out.exists()
    assert f"cannot decrypt chunk {victim.name[:64]}" in err and f"in store {store}" in err, err
    # verify names it, verify -r removes it, the rest stays
    proc = run_cli(["--config", cfg, "verify", "-s", store], check=False)
    assert f"cannot decrypt chunk {victim.name[:64]}" in proc.stderr.decode()
    run_cli(["--config", cfg, "verify", "-r", "-s", store], check=False)
    assert not (store / victim.relative_to(made["store"])).exists()
    assert len(chunk_files(store)) == len(chunk_files(made["store"])) - 1


def test_prune_and_verify(made: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "cfg.json", {str(store): {"encryption": True, "encryption-key": KEY,
                                                            "encryption-algorithm": "aes-256-gcm"}})
    small = tmp_path / "small"
    small.write_bytes(made["blob"].read_bytes()[:100_000])
    run_cli(["--config", cfg, "make", "-m", "16:64:256", "-s", store, tmp_path / "small.caibx", small])
    run_cli(["--config", cfg, "make", "-m", "16:64:256", "-s", store, tmp_path / "big.caibx", made["blob"]])
    # a chunk of another form in the same store is not this store's: never listed or pruned
    stranger = store / "abcd" / ("ab" * 32 + ".cacnk")
    stranger.parent.mkdir(exist_ok=True)
    stranger.write_bytes(b"not ours")
    proc = run_cli(["--config", cfg, "verify", "-s", store])
    assert proc.stderr == b""
    keep = {c.id.hex() for c in parse_index((tmp_path / "small.caibx").read_bytes()).chunks}
    run_cli(["--config", cfg, "prune", "-s", store, tmp_path / "small.caibx", "--yes"])
    left = {f.name for f in chunk_files(store)}
    assert left == {i + ".cacnk.aes-256-gcm-50d64035" for i in keep} | {stranger.name}
    out = tmp_path / "out"
    run_cli(["--config", cfg, "extract", "-s", store, tmp_path / "small.caibx", out])
    assert out.read_bytes() == small.read_bytes()


def test_encryption_without_key_is_refused(made: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, ``encryption: true`` was ignored and plain ``.cacnk`` chunks were written."""
    monkeypatch.delenv("DESYNC_ENCRYPTION_KEY", raising=False)
    store = tmp_path / "store"
    for entry, needle in (({"encryption": True}, "no encryption key configured"),
                          ({"encryption-key": KEY}, "without setting encryption to true"),
                          ({"encryption": True, "encryption-key": "abcd"}, "must be 32 bytes"),
                          ({"encryption": True, "encryption-key": KEY, "encryption-algorithm": "des"},
                           "unsupported encryption algorithm")):
        cfg = write_config(tmp_path / "cfg.json", {str(store): entry})
        proc = run_cli(["--config", cfg, "make", "-m", "16:64:256", "-s", store, tmp_path / "x.caibx",
                        made["blob"]], check=False)
        err = assert_clean_failure(proc)
        assert needle in err and f'store options for "{store}"' in err, err
        assert not (tmp_path / "x.caibx").exists()
        assert not store.exists() or chunk_files(store) == []


def test_index_store_refuses_encryption(made: dict[str, Path], tmp_path: Path) -> None:
    idx_dir = tmp_path / "indexes"
    idx_dir.mkdir()
    cfg = write_config(tmp_path / "cfg.json", {str(made["store"]): {"encryption": True, "encryption-key": KEY},
                                               str(idx_dir): {"encryption": True, "encryption-key": KEY}})
    for args in (["make", "-m", "16:64:256", "-s", made["store"], idx_dir / "x.caibx", made["blob"]],
                 ["extract", "-s", made["store"], idx_dir / "x.caibx", tmp_path / "out"]):
        proc = run_cli(["--config", cfg, *args], check=False)
        err = assert_clean_failure(proc)
        assert "encryption is not supported by index stores" in err and str(idx_dir) in err, err
    assert list(idx_dir.iterdir()) == []


# --- chunk-server ---------------------------------------------------------------------------

def test_chunk_server_encrypts_on_the_wire(made: dict[str, Path], tmp_path: Path) -> None:
    """desync TestChunkServerEncryption: a writable server over a plain store, its clients
    talk compressed+encrypted; the store keeps plain .cacnk."""
    plain_store = tmp_path / "plain"
    plain_store.mkdir()
    with Server("chunk-server", ["-s", plain_store, "-w", "--encryption-key", KEY,
                                 "--encryption-algorithm", "aes-256-gcm"]) as srv:
        cfg = write_config(tmp_path / "cfg.json", {srv.url: {"encryption": True, "encryption-key": KEY,
                                                             "encryption-algorithm": "aes-256-gcm"}})
        run_cli(["--config", cfg, "chop", "-s", srv.url, made["index"], made["blob"]])
        ids = {c.id.hex() for c in parse_index(made["index"].read_bytes()).chunks}
        assert {f.name for f in chunk_files(plain_store)} == {i + ".cacnk" for i in ids}
        out = tmp_path / "out"
        run_cli(["--config", cfg, "extract", "-s", srv.url, made["index"], out])
        assert out.read_bytes() == made["blob"].read_bytes()
        # on the wire: sealed bytes an independent implementation opens
        cid = sorted(ids)[0]
        http = urllib3.PoolManager()
        resp = http.request("GET", srv.url + chunk_file_name(bytes.fromhex(cid), ".cacnk.aes-256-gcm-50d64035"))
        assert resp.status == 200
        data = decompress(ref_open("aes-256-gcm", bytes.fromhex(KEY), resp.data))
        assert SHA512_256(data).hex() == cid
        resp = http.request("GET", srv.url + chunk_file_name(bytes.fromhex(cid), ".cacnk"))
        assert resp.status == 400 and b"verify compression and encryption settings" in resp.data
        # a PUT that does not authenticate is refused, even though it names a valid chunk
        resp = http.request("PUT", srv.url + chunk_file_name(bytes.fromhex("ab" * 32), ".cacnk.aes-256-gcm-50d64035"),
                            body=b"\0" * 40)
        assert resp.status == 400 and b"cannot decrypt" in resp.data
        # a client with another key asks for another name: one line naming the server
        wrong = write_config(tmp_path / "wrong.json", {srv.url: {"encryption": True, "encryption-key": OTHER_KEY,
                                                                 "encryption-algorithm": "aes-256-gcm"}})
        proc = run_cli(["--config", wrong, "extract", "-s", srv.url, made["index"], tmp_path / "o2"], check=False)
        err = assert_clean_failure(proc)
        assert proc.returncode == 1 and srv.url in err and "encryption settings" in err, err
        assert not (tmp_path / "o2").exists()


def test_chunk_server_over_encrypted_store(made: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain server over an encrypted store (key in the server's config): clients get .cacnk;
    the key in the environment alone does not make the server encrypt."""
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", KEY)
    cfg = write_config(tmp_path / "cfg.json", {str(made["store"]): {"encryption": True}})
    with Server("chunk-server", ["--config", cfg, "-s", made["store"]]) as srv:
        out = tmp_path / "out"
        run_cli(["extract", "-s", srv.url, made["index"], out])
        assert out.read_bytes() == made["blob"].read_bytes()
    # --encryption takes the environment's key; -u: uncompressed and encrypted on the wire
    with Server("chunk-server", ["--config", cfg, "-s", made["store"], "--encryption", "-u"]) as srv:
        client = write_config(tmp_path / "client.json", {srv.url: {"encryption": True, "uncompressed": True}})
        out = tmp_path / "out2"
        run_cli(["--config", client, "extract", "-s", srv.url, made["index"], out])
        assert out.read_bytes() == made["blob"].read_bytes()


def test_chunk_server_refuses_bad_encryption_flags(made: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESYNC_ENCRYPTION_KEY", raising=False)
    for flags, needle in ((["--encryption"], "no encryption key configured"),
                          (["--encryption-algorithm", "aes-256-gcm"], "no encryption key configured"),
                          (["--encryption-key", "12"], "must be 32 bytes"),
                          (["--encryption-key", KEY, "--encryption-algorithm", "x"], "unsupported encryption")):
        proc = run_cli(["chunk-server", "-s", made["store"], "-l", "127.0.0.1:0", *flags], check=False)
        err = assert_clean_failure(proc)
        assert needle in err and proc.returncode == 2, err
