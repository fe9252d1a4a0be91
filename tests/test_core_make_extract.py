"""make and extract through the CLI, checked against casync and against the input bytes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from desync_ref.formats.chunk import chunk_file_name, decompress
from desync_ref.formats.index import parse_index


def store_ids(store: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store.glob("*/*.cacnk")}


def blob(tmp: Path, data: bytes, name: str = "blob") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("digest", ["sha512-256", "sha256"])
def test_make_matches_casync_index_and_store(casync: str, tmp_path: Path, digest: str) -> None:
    rng = random.Random(5)
    src = blob(tmp_path, rng.randbytes(700_000) + bytes(300_000) + rng.randbytes(123_457))
    extra = [] if digest == "sha512-256" else ["--digest=sha256"]
    subprocess.run([casync, "make", *extra, f"--store={tmp_path / 'cs'}",
                    "--chunk-size=4096:16384:65536", str(tmp_path / "c.caibx"), str(src)],
                   check=True, capture_output=True)
    run_cli(["make", "--digest", digest, "-s", tmp_path / "ds", "-m", "4:16:64",
             tmp_path / "d.caibx", src])
    assert (tmp_path / "d.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    assert store_ids(tmp_path / "ds") == store_ids(tmp_path / "cs")
    index = parse_index((tmp_path / "d.caibx").read_bytes())
    assert store_ids(tmp_path / "ds") == {c.id.hex() for c in index.chunks}
    assert index.feature_flags == (0xB000000000000000 if digest == "sha512-256" else 0x9000000000000000)


def test_global_options_after_command(tmp_path: Path) -> None:
    src = blob(tmp_path, random.Random(1).randbytes(100_000))
    run_cli(["make", "-m", "1:4:16", tmp_path / "a.caibx", src, "--digest", "sha256"])
    run_cli(["--digest", "sha256", "make", "-m", "1:4:16", tmp_path / "b.caibx", src])
    assert (tmp_path / "a.caibx").read_bytes() == (tmp_path / "b.caibx").read_bytes()
    assert parse_index((tmp_path / "a.caibx").read_bytes()).digest == "sha256"


def test_index_to_stdout(tmp_path: Path) -> None:
    src = blob(tmp_path, random.Random(2).randbytes(50_000))
    out = run_cli(["make", "-", src]).stdout
    run_cli(["make", tmp_path / "f.caibx", src])
    assert out == (tmp_path / "f.caibx").read_bytes()


def test_casync_store_extracts_with_us_and_ours_with_casync(casync: str, tmp_path: Path) -> None:
    data = random.Random(9).randbytes(900_000)
    src = blob(tmp_path, data)
    subprocess.run([casync, "make", f"--store={tmp_path / 'cs'}", str(tmp_path / "c.caibx"), str(src)],
                   check=True, capture_output=True)
    run_cli(["extract", "-s", tmp_path / "cs", tmp_path / "c.caibx", tmp_path / "out1"])
    assert (tmp_path / "out1").read_bytes() == data
    run_cli(["make", "-s", tmp_path / "ds", tmp_path / "d.caibx", src])
    subprocess.run([casync, "extract", f"--store={tmp_path / 'ds'}", str(tmp_path / "d.caibx"),
                    str(tmp_path / "out2")], check=True, capture_output=True)
    assert (tmp_path / "out2").read_bytes() == data


def test_peer_blob_stores_extract(peer: Path, tmp_path: Path) -> None:
    for name in ("blob1", "blob2"):
        base = peer / "cmd" / "desync" / "testdata"
        run_cli(["extract", "-s", base / f"{name}.store", base / f"{name}.caibx", tmp_path / name])
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes()


def test_existing_chunks_are_not_rewritten(tmp_path: Path) -> None:
    src = blob(tmp_path, random.Random(4).randbytes(300_000))
    run_cli(["make", "-s", tmp_path / "s", "-m", "1:4:16", tmp_path / "x.caibx", src])
    files = sorted((tmp_path / "s").glob("*/*.cacnk"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    inodes = {p: p.stat().st_ino for p in files}
    run_cli(["make", "-s", tmp_path / "s", "-m", "1:4:16", tmp_path / "x.caibx", src])
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert {p: p.stat().st_ino for p in files} == inodes


def test_router_cache_and_zero_runs(tmp_path: Path) -> None:
    rng = random.Random(6)
    first, second = rng.randbytes(200_000), rng.randbytes(200_000)
    run_cli(["make", "-s", tmp_path / "a", "-m", "1:4:16", tmp_path / "a.caibx", blob(tmp_path, first, "f")])
    data = first + bytes(500_000) + second + first
    run_cli(["make", "-s", tmp_path / "b", "-m", "1:4:16", tmp_path / "x.caibx", blob(tmp_path, data)])
    index = parse_index((tmp_path / "x.caibx").read_bytes())
    # Store b lacks nothing; remove from b what a holds so only the chain has everything.
    for chunk in index.chunks:
        if (tmp_path / "a" / chunk_file_name(chunk.id)).exists():
            (tmp_path / "b" / chunk_file_name(chunk.id)).unlink(missing_ok=True)
    run_cli(["extract", "-s", tmp_path / "b", "-s", tmp_path / "a", "-c", tmp_path / "cache",
             tmp_path / "x.caibx", tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == data
    nonzero = {c.id.hex() for c in index.chunks if any(data[c.start:c.end])}
    assert store_ids(tmp_path / "cache") == nonzero
    # The zero run was never written: the output has fewer blocks than its size.
    assert os.stat(tmp_path / "out").st_blocks * 512 < len(data)
    # The cache alone now serves the whole file (zero chunks need no store at all).
    (tmp_path / "empty").mkdir()
    run_cli(["extract", "-s", tmp_path / "empty", "-c", tmp_path / "cache",
             tmp_path / "x.caibx", tmp_path / "out2"])
    assert (tmp_path / "out2").read_bytes() == data


def _stats(proc: subprocess.CompletedProcess[bytes]) -> dict[str, int]:
    stats: dict[str, int] = json.loads(proc.stdout)  # desync prints them on stdout
    return stats


def _counts(stats: dict[str, int]) -> dict[str, int]:
    keys = ("chunks-total", "chunks-from-store", "chunks-in-place", "chunks-from-seeds", "bytes-total")
    return {key: stats[key] for key in keys}


def test_in_place_resume_keeps_good_chunks(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(400_000)
    run_cli(["make", "-s", tmp_path / "s", "-m", "1:4:16", tmp_path / "x.caibx", blob(tmp_path, data)])
    chunks = parse_index((tmp_path / "x.caibx").read_bytes()).chunks
    n = len(chunks)
    assert n > 10

    def extract_k(target: Path) -> dict[str, int]:
        proc = run_cli(["extract", "-k", "--print-stats", "-s", tmp_path / "s", tmp_path / "x.caibx",
                        target])
        assert target.read_bytes() == data
        return _stats(proc)

    # an existing correct file: every chunk is in place, nothing is fetched
    same = blob(tmp_path, data, "same")
    assert _counts(extract_k(same)) == {"chunks-total": n, "chunks-from-store": 0,
                                        "chunks-in-place": n, "chunks-from-seeds": 0,
                                        "bytes-total": len(data)}
    # one changed byte: exactly the chunk holding it is fetched
    one = bytearray(data)
    one[chunks[n // 2].start + 7] ^= 0x55
    assert _counts(extract_k(blob(tmp_path, bytes(one), "one"))) == {
        "chunks-total": n, "chunks-from-store": 1, "chunks-in-place": n - 1,
        "chunks-from-seeds": 0, "bytes-total": len(data)}
    # an interrupted extraction: damaged and missing chunks are fetched, whole ones kept
    partial = bytearray(data)
    partial[100_000:100_010] = b"\xff" * 10
    good = [c for c in chunks if c.end <= 300_000 and not (c.start < 100_010 and c.end > 100_000)]
    stats = extract_k(blob(tmp_path, bytes(partial[:300_000]), "out"))
    assert stats["chunks-in-place"] == len(good)
    assert stats["chunks-from-store"] == n - len(good)
    # without -k nothing is taken from the existing file
    proc = run_cli(["extract", "--print-stats", "-s", tmp_path / "s", tmp_path / "x.caibx", same])
    assert _stats(proc)["chunks-from-store"] == n and same.read_bytes() == data


def _made(tmp: Path) -> tuple[Path, Path, bytes]:
    data = random.Random(12).randbytes(200_000)
    run_cli(["make", "-s", tmp / "s", "-m", "1:4:16", tmp / "x.caibx", blob(tmp, data)])
    return tmp / "x.caibx", tmp / "s", data


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((".out", "out")))


def test_missing_chunk_fails_cleanly(tmp_path: Path) -> None:
    index, store, _ = _made(tmp_path)
    victim = parse_index(index.read_bytes()).chunks[3].id
    (store / chunk_file_name(victim)).unlink()
    err = assert_clean_failure(run_cli(["extract", "-s", store, index, tmp_path / "out"], check=False))
    assert f"chunk {victim.hex()} not found in {store}" in err
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["other-content", "not-zstd", "truncated"])
def test_invalid_chunk_fails_cleanly(tmp_path: Path, damage: str) -> None:
    index, store, _ = _made(tmp_path)
    chunks = parse_index(index.read_bytes()).chunks
    victim = store / chunk_file_name(chunks[2].id)
    bad = chunks[2].id.hex()
    if damage == "other-content":
        victim.write_bytes((store / chunk_file_name(chunks[5].id)).read_bytes())
        why = f"chunk id {bad} does not match its hash {chunks[5].id.hex()}"
    elif damage == "not-zstd":
        victim.write_bytes(b"this is not zstd")
        why = f"chunk {bad} is not compressed with zstd"
    else:
        victim.write_bytes(victim.read_bytes()[:-5])
        why = f"chunk {bad} is not valid compressed data: truncated"
    err = assert_clean_failure(run_cli(["extract", "-n", "1", "-s", store, index, tmp_path / "out"], check=False))
    assert why in err
    assert _leftovers(tmp_path) == []


def test_bad_inputs_fail_cleanly(tmp_path: Path) -> None:
    index, store, _data = _made(tmp_path)
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    # each command and the words its error must hold: what is wrong and with which input
    cases: list[tuple[list[str | Path], list[str]]] = [
        (["make", tmp_path / "y.caibx", tmp_path / "does-not-exist"],
         [f"No such file or directory: {tmp_path / 'does-not-exist'}"]),
        (["make", "-s", tmp_path / "file", tmp_path / "y.caibx", tmp_path / "blob"],
         [str(tmp_path / "file"), "is not a directory"]),
        (["make", "-m", "64:16:256", tmp_path / "y.caibx", tmp_path / "blob"],
         ["min chunk size must not be greater than avg"]),
        (["extract", "-s", tmp_path / "file", index, tmp_path / "out"],
         [str(tmp_path / "file"), "is not a directory"]),
        (["extract", "-s", store, tmp_path / "nope.caibx", tmp_path / "out"],
         [f"cannot read index {tmp_path / 'nope.caibx'}: No such file or directory"]),
        (["extract", "-s", store, tmp_path / "blob", tmp_path / "out"],
         [f"{tmp_path / 'blob'}: not a casync index"]),
        (["extract", "--digest", "sha256", "-s", store, index, tmp_path / "out"],
         [f"{index} uses digest sha512-256 but sha256 was requested"]),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["extract", "-s", store, index, tmp_path / "ro" / "out"],
                      [str(tmp_path / "ro")]))
    for args, words in cases:
        err = assert_clean_failure(run_cli(args, check=False))
        for word in words:
            assert word in err, (args, err)
    # the index and store are good: the same extraction without the fault succeeds
    run_cli(["extract", "-s", store, index, tmp_path / "good"])
    assert (tmp_path / "good").read_bytes() == _data
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "y.caibx").exists()


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_killed_make_leaves_only_whole_chunks(tmp_path: Path) -> None:

    src = tmp_path / "big"
    with src.open("wb") as out:
        for n in range(48):
            out.write(random.Random(n).randbytes(1 << 20))
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "make", "-s", str(tmp_path / "s"),
                             "-m", "1:4:16", str(tmp_path / "x.caibx"), str(src)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "s").glob("*/*.cacnk"))) < 200:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Its worker processes die with it instead of writing on into the store.
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(src)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(src)) == []
    chunks = list((tmp_path / "s").glob("*/*.cacnk"))
    assert len(chunks) >= 200
    assert not (tmp_path / "x.caibx").exists()
    for path in chunks:
        data = decompress(path.read_bytes())
        assert hashlib.new("sha512_256", data).hexdigest() == path.name.removesuffix(".cacnk")
