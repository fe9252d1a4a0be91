"""list-chunks, info, inspect-chunks, verify, verify-index, chop, cache, prune, cat, chunk.

Run through the CLI as a subprocess, against desync's own test data (the expectations of
its ``cmd/desync/*_test.go``) and against stores built here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from desync_ref.formats.chunk import chunk_file_name, decompress, digest_function
from desync_ref.formats.index import Index, parse_index

SHA = digest_function("sha512-256")


@pytest.fixture
def data(peer: Path) -> Path:
    return peer / "cmd" / "desync" / "testdata"


def index_of(path: Path) -> Index:
    return parse_index(path.read_bytes())


def store_files(store: Path) -> dict[str, Path]:
    return {p.name.removesuffix(".cacnk"): p for p in store.glob("*/*.cacnk")}


def valid_store_ids(store: Path) -> set[str]:
    """Ids of the store's chunk files, each checked: it decompresses and hashes to its name."""
    ids = set()
    for hex_id, path in store_files(store).items():
        assert SHA(decompress(path.read_bytes())).hex() == hex_id, path
        ids.add(hex_id)
    return ids


def unique_hex(index: Index) -> set[str]:
    return {c.id.hex() for c in index.chunks}


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, _ in os.walk(dst):
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
    os.chmod(dst, 0o755)
    return dst


# --- list-chunks -------------------------------------------------------------------------


def test_list_chunks_prints_every_id_in_index_order(data: Path) -> None:
    out = run_cli(["list-chunks", data / "blob1.caibx"]).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 161
    assert all(len(line) == 64 and bytes.fromhex(line) for line in lines)
    assert lines == [c.id.hex() for c in index_of(data / "blob1.caibx").chunks]
    assert len(set(lines)) == 131
    from_stdin = run_cli(["list-chunks", "-"], input=(data / "blob1.caibx").read_bytes())
    assert from_stdin.stdout.decode() == out


def test_global_options_before_or_after_the_command(data: Path) -> None:
    for args in (["--digest", "sha256", "list-chunks", data / "blob1.caibx"],
                 ["list-chunks", data / "blob1.caibx", "--digest", "sha256"]):
        err = assert_clean_failure(run_cli(args, check=False))
        assert "sha256" in err
    ok = run_cli(["list-chunks", "--digest", "sha512-256", "--verbose", data / "blob1.caibx"])
    assert len(ok.stdout.splitlines()) == 161


# --- info ----------------------------------------------------------------------------------

INFO_BASE = {"total": 161, "unique": 131, "in-store": 131, "size": 2097152,
             "chunk-size-min": 2048, "chunk-size-avg": 8192, "chunk-size-max": 32768}

# The cases of desync's cmd/desync/info_test.go.
INFO_CASES = [
    (["-s", "blob1.store", "blob1.caibx"],
     {"in-seed": 0, "in-cache": 0, "not-in-seed-nor-cache": 131,
      "dedup-size-not-in-seed": 1114112, "dedup-size-not-in-seed-nor-cache": 1114112,
      "dedup-size-not-in-seed-nor-cache-compressed": 0}),
    (["-s", "blob1.store", "--seed", "blob2.caibx", "blob1.caibx"],
     {"in-seed": 124, "in-cache": 0, "not-in-seed-nor-cache": 7,
      "dedup-size-not-in-seed": 80029, "dedup-size-not-in-seed-nor-cache": 80029,
      "dedup-size-not-in-seed-nor-cache-compressed": 0}),
    (["-s", "blob2.store", "--seed", "blob1.caibx", "--cache", "blob2.cache",
      "--chunks-info", "blob2_chunks_info.json", "blob2.caibx"],
     {"in-seed": 124, "in-cache": 25, "not-in-seed-nor-cache": 7,
      "dedup-size-not-in-seed": 80029, "dedup-size-not-in-seed-nor-cache": 80029,
      "dedup-size-not-in-seed-nor-cache-compressed": 76000}),
    (["-s", "blob2.store", "--cache", "blob2.cache", "--chunks-info", "blob2_chunks_info.json",
      "blob2.caibx"],
     {"in-seed": 0, "in-cache": 25, "not-in-seed-nor-cache": 106,
      "dedup-size-not-in-seed": 1114112, "dedup-size-not-in-seed-nor-cache": 853943,
      "dedup-size-not-in-seed-nor-cache-compressed": 818145}),
    (["-s", "blob2.store", "--chunks-info", "blob2_chunks_info_missing.json", "blob2.caibx"],
     {"in-seed": 0, "in-cache": 0, "not-in-seed-nor-cache": 131,
      "dedup-size-not-in-seed": 1114112, "dedup-size-not-in-seed-nor-cache": 1114112,
      "dedup-size-not-in-seed-nor-cache-compressed": 0}),
]

INFO_KEYS = ["total", "unique", "in-store", "in-seed", "in-cache", "not-in-seed-nor-cache",
             "size", "dedup-size-not-in-seed", "dedup-size-not-in-seed-nor-cache",
             "dedup-size-not-in-seed-nor-cache-compressed", "chunk-size-min", "chunk-size-avg",
             "chunk-size-max"]


@pytest.mark.parametrize(("args", "expected"), INFO_CASES)
def test_info_matches_desync(data: Path, args: list[str], expected: dict[str, int]) -> None:
    argv = [a if a.startswith("-") else str(data / a) for a in args]
    out = run_cli(["info", *argv], cwd=data).stdout.decode()
    got = json.loads(out)
    assert got == {**INFO_BASE, **expected}
    assert list(got) == INFO_KEYS  # desync's field order
    assert out == json.dumps(got, indent=2) + "\n"  # MarshalIndent("", "  ") + newline


def test_info_without_store_and_plain_format(data: Path) -> None:
    got = json.loads(run_cli(["info", data / "blob1.caibx"]).stdout)
    assert got["in-store"] == 0 and got["unique"] == 131
    plain = run_cli(["info", "-f", "plain", "-s", data / "blob2.store", "-c", data / "blob2.cache",
                     data / "blob2.caibx"]).stdout.decode().splitlines()
    assert plain == [
        "Blob size: 2097152",
        "Size of deduplicated chunks not in seed: 1114112",
        "Size of deduplicated chunks not in seed nor cache: 853943",
        "Total chunks: 161",
        "Unique chunks: 131",
        "Chunks in store: 131",
        "Chunks in seed: 0",
        "Chunks in cache: 25",
        "Chunks not in seed nor cache: 106",
        "Compressed chunks not in seed nor cache: 0",
        "Chunk size min: 2048",
        "Chunk size avg: 8192",
        "Chunk size max: 32768",
    ]


def test_info_seed_list_is_comma_separated(data: Path) -> None:
    seeds = f"{data / 'blob2.caibx'},{data / 'blob2.caibx'}"
    got = json.loads(run_cli(["info", "--seed", seeds, data / "blob1.caibx"]).stdout)
    assert got["in-seed"] == 124


def test_info_refuses_a_chunks_info_with_wrong_sizes(data: Path, tmp_path: Path) -> None:
    entries = json.loads((data / "blob2_chunks_info.json").read_bytes())
    entries[0]["uncompressed_size"] += 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entries))
    err = assert_clean_failure(run_cli(["info", "--chunks-info", bad, data / "blob2.caibx"],
                                       check=False))
    assert entries[0]["id"] in err


# --- inspect-chunks ------------------------------------------------------------------------


@pytest.mark.parametrize(("store", "expected"), [
    ("blob2.store", "blob2_chunks_info.json"),
    ("blob2.cache", "blob2_chunks_info_missing.json"),
    (None, "blob2_chunks_info_no_store.json"),
])
def test_inspect_chunks_byte_for_byte(data: Path, tmp_path: Path, store: str | None,
                                      expected: str) -> None:
    args = ["-s", data / store] if store else []
    out = run_cli(["inspect-chunks", *args, data / "blob2.caibx"]).stdout
    assert out == (data / expected).read_bytes()
    target = tmp_path / "out.json"
    run_cli(["inspect-chunks", *args, data / "blob2.caibx", target])
    assert target.read_bytes() == out


# --- verify-index --------------------------------------------------------------------------


def test_verify_index_accepts_matching_files(data: Path) -> None:
    for name in ("blob1", "blob2"):
        proc = run_cli(["verify-index", data / f"{name}.caibx", data / name])
        assert proc.stdout == b"" and proc.stderr == b""


def test_verify_index_refuses_other_data(data: Path) -> None:
    err = assert_clean_failure(run_cli(["verify-index", data / "blob2.caibx", data / "blob1"],
                                       check=False))
    first = index_of(data / "blob2.caibx").chunks[0]
    assert f"chunk 0 (offset 0, size {first.size})" in err and first.id.hex() in err
    # blob2_corrupted has bytes inserted and deleted: its size already differs.
    err = assert_clean_failure(run_cli(["verify-index", data / "blob2.caibx",
                                        data / "blob2_corrupted"], check=False))
    assert "index size (2097152) does not match file size (2097147)" in err


def test_verify_index_names_the_first_bad_chunk(data: Path, tmp_path: Path) -> None:
    blob = bytearray((data / "blob2").read_bytes())
    blob[572020] ^= 0xFF
    blob[1500000] ^= 0xFF
    bad = tmp_path / "blob2_bad"
    bad.write_bytes(blob)
    index = index_of(data / "blob2.caibx")
    number, chunk = next((n, c) for n, c in enumerate(index.chunks) if c.start <= 572020 < c.end)
    err = assert_clean_failure(run_cli(["verify-index", "-n", "4", data / "blob2.caibx", bad],
                                       check=False))
    assert f"chunk {number} (offset {chunk.start}, size {chunk.size})" in err
    assert chunk.id.hex() in err


# --- cat -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "start", "length"), [
    ([], 0, 0), (["-o", "1024"], 1024, 0), (["-o", "1024", "-l", "2048"], 1024, 2048),
    (["-o", "2097152"], 2097152, 0), (["-o", "40000", "-l", "100000"], 40000, 100000),
])
def test_cat_prints_the_blob_or_a_slice(data: Path, extra: list[str], start: int,
                                        length: int) -> None:
    blob = (data / "blob1").read_bytes()
    out = run_cli(["cat", "--store", data / "blob1.store", *extra, data / "blob1.caibx"]).stdout
    assert out == blob[start:start + length if length else len(blob)]


def test_cat_to_a_file(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "slice"
    run_cli(["cat", "-s", data / "blob1.store", "-o", "5", "-l", "70000", "-n", "3",
             data / "blob1.caibx", target])
    assert target.read_bytes() == (data / "blob1").read_bytes()[5:70005]


def test_cat_failures_leave_no_output_file(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    err = assert_clean_failure(run_cli(["cat", "-s", data / "empty.store", data / "blob1.caibx",
                                        target], check=False))
    assert "not found" in err
    assert list(tmp_path.iterdir()) == []
    for extra in (["-o", "2097153"], ["-o", "2097000", "-l", "153"], ["-o", "-1"]):
        assert_clean_failure(run_cli(["cat", "-s", data / "blob1.store", *extra,
                                      data / "blob1.caibx", target], check=False))
    assert list(tmp_path.iterdir()) == []


def test_cat_refuses_a_corrupted_chunk(data: Path, tmp_path: Path) -> None:
    store = writable_copy(data / "blob1.store", tmp_path / "store")
    files = store_files(store)
    victim = index_of(data / "blob1.caibx").chunks[3].id.hex()
    other = next(p for h, p in files.items() if h != victim)
    shutil.copyfile(other, files[victim])
    err = assert_clean_failure(run_cli(["cat", "-s", store, data / "blob1.caibx"], check=False))
    assert victim in err


# --- chunk -----------------------------------------------------------------------------------


def test_chunk_matches_desyncs_index(peer: Path) -> None:
    out = run_cli(["chunk", peer / "testdata" / "chunker.input"]).stdout.decode()
    rows = [line.split("\t") for line in out.splitlines()]
    index = index_of(peer / "testdata" / "chunker.index")
    assert len(rows) == 20
    assert rows == [[str(c.start), str(c.size), c.id.hex()] for c in index.chunks]
    listed = run_cli(["list-chunks", peer / "testdata" / "chunker.index"]).stdout.decode()
    assert [r[2] for r in rows] == listed.splitlines()


def test_chunk_from_a_start_offset(peer: Path) -> None:
    path = peer / "testdata" / "chunker.input"
    blob = path.read_bytes()
    out = run_cli(["chunk", "-S", "1000", "-m", "2:8:32", path]).stdout.decode()
    rows = [(int(s), int(n), h) for s, n, h in (line.split("\t") for line in out.splitlines())]
    assert rows[0][0] == 1000
    assert sum(n for _, n, _ in rows) == len(blob) - 1000
    for start, size, hex_id in rows:
        assert 0 < size <= 32 * 1024
        assert SHA(blob[start:start + size]).hex() == hex_id
    assert run_cli(["chunk", "-S", str(len(blob) + 5), path]).stdout == b""


# --- chop ------------------------------------------------------------------------------------


def test_chop_then_extract_round_trip(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, data / "blob1.caibx", data / "blob1"])
    assert valid_store_ids(store) == unique_hex(index_of(data / "blob1.caibx"))
    out = tmp_path / "out"
    run_cli(["extract", "-s", store, data / "blob1.caibx", out])
    assert out.read_bytes() == (data / "blob1").read_bytes()


def test_chop_skips_ignored_chunks(data: Path, tmp_path: Path) -> None:
    blob1, blob2 = index_of(data / "blob1.caibx"), index_of(data / "blob2.caibx")
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, "--ignore", data / "blob2.caibx", data / "blob1.caibx",
             data / "blob1"])
    assert valid_store_ids(store) == unique_hex(blob1) - unique_hex(blob2)
    assert len(valid_store_ids(store)) == 7
    ignore = sorted(unique_hex(blob1))[:100]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(f"  {i}  \n" for i in ignore))
    store2 = tmp_path / "store2"
    store2.mkdir()
    run_cli(["chop", "-s", store2, "--ignore-chunks", listing, data / "blob1.caibx",
             data / "blob1"])
    assert valid_store_ids(store2) == unique_hex(blob1) - set(ignore)


def test_chop_never_stores_data_that_does_not_match(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    err = assert_clean_failure(run_cli(["chop", "-s", store, data / "blob2.caibx", data / "blob1"],
                                       check=False))
    assert "does not match" in err
    # Whatever was stored before the failure is valid and belongs to blob2.
    assert valid_store_ids(store) <= unique_hex(index_of(data / "blob2.caibx"))
    short = tmp_path / "short"
    short.write_bytes((data / "blob1").read_bytes()[:100000])
    assert_clean_failure(run_cli(["chop", "-s", store, "-n", "1", data / "blob1.caibx", short],
                                 check=False))
    assert valid_store_ids(store) <= unique_hex(index_of(data / "blob2.caibx")) | unique_hex(
        index_of(data / "blob1.caibx"))


# --- cache -----------------------------------------------------------------------------------


def test_cache_copies_exactly_the_referenced_chunks(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    run_cli(["cache", "-s", data / "blob1.store", "-c", target, data / "blob1.caibx"])
    ids = valid_store_ids(target)
    assert len(ids) == 131
    assert ids == unique_hex(index_of(data / "blob1.caibx"))
    for name in ids:
        relative = chunk_file_name(bytes.fromhex(name))
        assert (target / relative).read_bytes() == (data / "blob1.store" / relative).read_bytes()


def test_cache_from_several_stores_and_indexes_with_ignore(data: Path, tmp_path: Path) -> None:
    blob1, blob2 = index_of(data / "blob1.caibx"), index_of(data / "blob2.caibx")
    target = tmp_path / "cache"
    target.mkdir()
    run_cli(["cache", "-s", f"{data / 'blob1.store'},{data / 'blob2.store'}", "-c", target,
             "--ignore", data / "blob1.caibx", data / "blob1.caibx", data / "blob2.caibx"])
    assert valid_store_ids(target) == unique_hex(blob2) - unique_hex(blob1)
    target2 = tmp_path / "cache2"
    target2.mkdir()
    run_cli(["cache", "-s", data / "blob1.store", "-s", data / "blob2.store", "-c", target2,
             data / "blob1.caibx", data / "blob2.caibx"])
    assert valid_store_ids(target2) == unique_hex(blob1) | unique_hex(blob2)


def test_cache_does_not_copy_invalid_chunks(data: Path, tmp_path: Path) -> None:
    source = writable_copy(data / "blob1.store", tmp_path / "source")
    files = store_files(source)
    victim = sorted(files)[0]
    files[victim].write_bytes(b"not zstd")
    target = tmp_path / "cache"
    target.mkdir()
    err = assert_clean_failure(run_cli(["cache", "-s", source, "-c", target,
                                        data / "blob1.caibx"], check=False))
    assert victim in err
    assert victim not in valid_store_ids(target)


# --- prune -----------------------------------------------------------------------------------


def chopped_store(data: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, data / "blob1.caibx", data / "blob1"])
    (store / "README").write_text("not a chunk\n")
    (store / "abcd").mkdir()
    (store / "abcd" / "notes.txt").write_text("keep me\n")
    first = next(store.glob("*/*.cacnk"))
    (first.parent / ".tmp-cacnk12345").write_bytes(b"partial")
    return store


def test_prune_yes_keeps_exactly_the_referenced_chunks(data: Path, tmp_path: Path) -> None:
    store = chopped_store(data, tmp_path)
    blob1, blob2 = index_of(data / "blob1.caibx"), index_of(data / "blob2.caibx")
    proc = run_cli(["prune", "-s", store, "-y", data / "blob2.caibx"])
    assert proc.stdout == b""
    assert valid_store_ids(store) == unique_hex(blob1) & unique_hex(blob2)
    assert len(valid_store_ids(store)) == 124
    assert (store / "README").read_text() == "not a chunk\n"
    assert (store / "abcd" / "notes.txt").read_text() == "keep me\n"
    assert not list(store.glob("*/.tmp-cacnk*"))


@pytest.mark.parametrize("answer", [b"n\n", b"N\n", b"\n", b"maybe\nn\n"])
def test_prune_declined_deletes_nothing(data: Path, tmp_path: Path, answer: bytes) -> None:
    store = chopped_store(data, tmp_path)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    proc = run_cli(["prune", "-s", store, data / "blob2.caibx"], input=answer)
    assert proc.stdout.decode().startswith(
        "Warning: The provided index files reference 131 unique chunks. Are you sure\n"
        f"you want to delete all other chunks from '{store}'?\n[y/N]: ")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_prune_confirmed_on_stdin(data: Path, tmp_path: Path) -> None:
    store = chopped_store(data, tmp_path)
    run_cli(["prune", "-s", store, data / "blob2.caibx"], input=b"y\n")
    assert len(valid_store_ids(store)) == 124
    assert (store / "README").exists()


def test_prune_without_answer_fails_and_deletes_nothing(data: Path, tmp_path: Path) -> None:
    store = chopped_store(data, tmp_path)
    assert_clean_failure(run_cli(["prune", "-s", store, data / "blob2.caibx"], input=b"",
                                 check=False))
    assert len(valid_store_ids(store)) == 131


# --- verify ----------------------------------------------------------------------------------


def test_verify_reports_and_repairs_invalid_chunks(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, data / "blob1.caibx", data / "blob1"])
    bad_id = "1234567890" + "0" * 54
    (store / "1234").mkdir()
    (store / "1234" / f"{bad_id}.cacnk").write_bytes(b"invalid")
    files = store_files(store)
    swapped, donor = sorted(h for h in files if h != bad_id)[:2]
    shutil.copyfile(files[donor], files[swapped])

    proc = run_cli(["verify", "-s", store])
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 2
    assert any(bad_id in line for line in lines)
    assert any(f"chunk id {swapped} does not match its hash {donor}" in line for line in lines)
    assert len(store_files(store)) == 132

    proc = run_cli(["verify", "-s", store, "-r", "-n", "2"])
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 2 and all(line.endswith(": removed") for line in lines)
    assert valid_store_ids(store) == unique_hex(index_of(data / "blob1.caibx")) - {swapped}
    assert run_cli(["verify", "-s", store]).stderr == b""


# --- errors ----------------------------------------------------------------------------------


def test_error_cases_are_one_line(data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    garbage = tmp_path / "garbage.caibx"
    garbage.write_bytes(b"not an index at all" * 10)
    bad_ids = tmp_path / "ids.txt"
    bad_ids.write_text("xyz\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["list-chunks", missing], "No such file"),
        (["list-chunks", garbage], "not a casync index"),
        (["list-chunks"], "required: index"),
        (["bogus-command"], "invalid choice"),
        (["info", "-s", missing, data / "blob1.caibx"], "does not exist"),
        (["info", "-f", "xml", data / "blob1.caibx"], 'unsupported output format "xml"'),
        (["info", "--chunks-info", garbage, data / "blob1.caibx"], "not valid JSON"),
        (["inspect-chunks", "-s", missing, data / "blob1.caibx"], "does not exist"),
        (["verify"], "no store provided"),
        (["verify", "-s", missing], "does not exist"),
        (["verify", "-s", empty, "-n", "x"], "invalid int value"),
        (["verify-index", data / "blob1.caibx", missing], "No such file"),
        (["chop", data / "blob1.caibx", data / "blob1"], "no target store provided"),
        (["chop", "-s", missing, data / "blob1.caibx", data / "blob1"], "does not exist"),
        (["chop", "-s", empty, data / "blob1.caibx", missing], "No such file"),
        (["chop", "-s", empty, "--ignore-chunks", bad_ids, data / "blob1.caibx", data / "blob1"],
         "invalid chunk id 'xyz'"),
        (["cache", "-c", empty, data / "blob1.caibx"], "no source store provided"),
        (["cache", "-s", data / "blob1.store", data / "blob1.caibx"],
         "no target cache store provided"),
        (["cache", "-s", data / "empty.store", "-c", empty, data / "blob1.caibx"], "not found"),
        (["prune", data / "blob1.caibx"], "no store provided"),
        (["prune", "-s", missing, "-y", data / "blob1.caibx"], "does not exist"),
        (["cat", data / "blob1.caibx"], "no store provided"),
        (["chunk", missing], "No such file"),
        (["chunk", "-m", "64:16:256", data / "blob1"], "min chunk size"),
        (["chunk", "-S", "-5", data / "blob1"], "invalid start position"),
    ]
    for args, reason in cases:
        err = assert_clean_failure(run_cli(args, check=False))
        assert reason in err, (args, err)
    assert list(empty.iterdir()) == []


# --- other digests and empty indexes ---------------------------------------------------------


def test_sha256_indexes_through_chop_verify_cat_and_cache(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 3000 + os.urandom(200_000)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    index = tmp_path / "blob.caibx"
    run_cli(["make", "--digest", "sha256", "-m", "2:8:32", index, src])
    store = tmp_path / "store"
    store.mkdir()
    run_cli(["chop", "-s", store, index, src])
    ids = {c.id.hex() for c in index_of(index).chunks}
    assert set(store_files(store)) == ids
    assert run_cli(["verify", "--digest", "sha256", "-s", store]).stderr == b""
    mismatches = run_cli(["verify", "-s", store]).stderr.decode().splitlines()
    assert len(mismatches) == len(ids)  # hashed with sha512-256 every id is wrong
    assert run_cli(["cat", "-s", store, index]).stdout == blob
    run_cli(["verify-index", index, src])
    copy = tmp_path / "copy"
    copy.mkdir()
    run_cli(["cache", "-s", store, "-c", copy, index])
    assert set(store_files(copy)) == ids


def test_empty_index(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    index = tmp_path / "empty.caibx"
    run_cli(["make", index, empty])
    assert run_cli(["inspect-chunks", index]).stdout == b"null\n"  # desync's nil slice
    assert run_cli(["list-chunks", index]).stdout == b""
    assert json.loads(run_cli(["info", index]).stdout)["size"] == 0
    store = tmp_path / "store"
    store.mkdir()
    assert run_cli(["cat", "-s", store, index]).stdout == b""
    run_cli(["verify-index", index, empty])


def test_help_is_as_wide_as_columns_says() -> None:
    """cli._Formatter finds the width as shutil.get_terminal_size does (COLUMNS first)."""
    env = {**os.environ, "COLUMNS": "50"}
    narrow = subprocess.run([sys.executable, "-m", "desync_ref", "extract", "--help"],
                            capture_output=True, text=True, env=env, check=True, timeout=60)
    env["COLUMNS"] = "200"
    wide = subprocess.run([sys.executable, "-m", "desync_ref", "extract", "--help"],
                          capture_output=True, text=True, env=env, check=True, timeout=60)
    # argparse never breaks a word, so a narrow help has lines past 50; it has more of them.
    assert len(narrow.stdout.splitlines()) > len(wide.stdout.splitlines())
    assert max(map(len, wide.stdout.splitlines())) > 100
