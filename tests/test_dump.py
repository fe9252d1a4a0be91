"""``desync-ref dump``: golden text and JSON for a fixture of each format, records that tile
the bytes they dissect, and the damage of every corrupted index and hostile archive of the
suite named at the right offset with exit status 1 (spec/dump.md)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.corrupt_index_cases import CORRUPTIONS, ERROR_CASE
from desync_ref.audit.dump import SPEC_ANCHORS
from desync_ref.cli import main
from desync_ref.formats.index import encode_index, parse_index
from fixtures.cases import golden_index_path
from tests import catar_bytes as cb
from tests.test_core_index import _corrupt, sample_index
from tests.test_hostile_archives import CATAR_CASES, build

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "fixtures" / "golden" / "dump"
CASES: dict[str, dict[str, Any]] = json.loads((GOLDEN / "cases.json").read_text())


def dump(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The CLI in this process, from the repository root; (exit status, stdout)."""
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["dump", *args])
    return code, out.getvalue()


def dump_json(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    code, text = dump(["-f", "json", *args], monkeypatch)
    return code, json.loads(text)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_dumps(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args, status = CASES[case]["args"], CASES[case]["exit"]
    assert dump(args, monkeypatch) == (status, (GOLDEN / f"{case}.txt").read_text())
    assert dump(["-f", "json", *args], monkeypatch) == (status, (GOLDEN / f"{case}.json").read_text())


def _tiles(doc: dict[str, Any]) -> None:
    """The records follow each other without gap or overlap and cover all the bytes."""
    at = 0
    for r in doc["records"]:
        assert r["offset"] == at, r
        at += r["size"]
    assert at == doc["size"]


@pytest.mark.parametrize("case", ["caibx", "catar", "protocol-client", "protocol-server", "cacnk"])
def test_records_tile_the_file(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, doc = dump_json(CASES[case]["args"], monkeypatch)
    assert code == 0 and doc["valid"]
    _tiles(doc)


def test_index_items_are_the_parsed_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "fixtures/desync/testdata/index.caibx"
    index = parse_index((ROOT / path).read_bytes())
    _, doc = dump_json([path], monkeypatch)
    assert [r["type"] for r in doc["records"]] == ["INDEX", "TABLE", *["TABLE_ITEM"] * 3, "TABLE_TAIL"]
    items = [{f["name"]: f["value"] for f in r["fields"]} for r in doc["records"] if r["type"] == "TABLE_ITEM"]
    assert [(i["chunk_start"], i["chunk_size"], i["chunk"]) for i in items] == [
        (c.start, c.size, c.id.hex()) for c in index.chunks]


def test_caidx_stream_names_the_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    _, doc = dump_json(CASES["caidx-store"]["args"], monkeypatch)
    stream = doc["stream"]
    _tiles(stream)
    (chunk,) = [r for r in doc["records"] if r["type"] == "TABLE_ITEM"]
    chunk_id = next(f["value"] for f in chunk["fields"] if f["name"] == "chunk")
    assert {c["id"] for r in stream["records"] for c in r["chunks"]} == {chunk_id}
    catar = (ROOT / "fixtures/catar/golden/basic-default.catar").read_bytes()
    assert stream["size"] == len(catar)


def test_range_keeps_overlapping_records(monkeypatch: pytest.MonkeyPatch) -> None:
    _, doc = dump_json(["--range", "100:10", "fixtures/desync/testdata/index.caibx"], monkeypatch)
    # bytes 100..109: the end of item 0 (64..103) and the start of item 1 (104..143)
    assert [r["offset"] for r in doc["records"]] == [64, 104]


def test_spec_sections_exist() -> None:
    for anchor in SPEC_ANCHORS:
        page, _, section = anchor.partition("#")
        slugs = {re.sub(r"[^a-z0-9 -]", "", h.strip("# ").lower()).replace(" ", "-")
                 for h in (ROOT / page).read_text().splitlines() if h.startswith("#")}
        assert section in slugs, anchor


def test_encrypted_chunk_with_the_wrong_key(monkeypatch: pytest.MonkeyPatch) -> None:
    args = list(CASES["cacnk-encrypted"]["args"])
    args[1] = "ff" * 32
    code, doc = dump_json(args, monkeypatch)
    assert code == 1
    assert [d["offset"] for d in doc["damage"]] == [doc["size"] - 16]  # the tag


def test_bad_usage_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert dump(["no/such/file.caibx"], monkeypatch)[0] == 2
    assert dump(["--range", "x", "fixtures/desync/testdata/index.caibx"], monkeypatch)[0] == 2
    assert "Traceback" not in capsys.readouterr().err


# Corrupted indexes of tests/test_core_index.py (sample_index: 2 items, 184 bytes) and the
# offset each damage lies at.
INDEX_CASES = {
    "truncated": (lambda raw: raw[:-1], 144),  # 39 bytes where the tail should be
    "header only": (lambda raw: raw[:48], 48),
    "trailing bytes": (lambda raw: raw + b"\0" * 40, 184),  # after the tail
    "one trailing byte": (lambda raw: raw + b"\0", 184),
    "wrong magic": (lambda raw: _corrupt(raw, 8, 0x1234), 8),
    "wrong header size": (lambda raw: _corrupt(raw, 0, 56), 0),
    "unknown flag bit": (lambda raw: _corrupt(raw, 16, 0xB000000000000000 | 1 << 40), 16),
    "unnormalized flags": (lambda raw: _corrupt(raw, 16, 3), 16),
    "min above avg": (lambda raw: _corrupt(raw, 24, 100), 24),
    "zero min": (lambda raw: _corrupt(raw, 24, 0), 24),
    "table size": (lambda raw: _corrupt(raw, 48, 0), 48),
    "table magic": (lambda raw: _corrupt(raw, 56, 0), 56),
    "tail marker": (lambda raw: _corrupt(raw, len(raw) - 8, 0), 176),
    "tail size": (lambda raw: _corrupt(raw, len(raw) - 16, 5), 168),
    "tail index offset": (lambda raw: _corrupt(raw, len(raw) - 24, 0), 160),
    "tail zero fill": (lambda raw: _corrupt(raw, len(raw) - 40, 7), 144),
    "offsets not increasing": (lambda raw: _corrupt(raw, 64 + 40, 100), 104),
    "chunk larger than max": (lambda raw: _corrupt(raw, 64 + 40, 100 + 257), 104),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_corrupted_index(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mangle, offset = INDEX_CASES[case]
    path = tmp_path / "x.caibx"
    path.write_bytes(mangle(encode_index(sample_index())))
    code, doc = dump_json([str(path)], monkeypatch)
    assert code == 1 and not doc["valid"]
    assert doc["damage"][0]["offset"] == offset
    code, text = dump([str(path)], monkeypatch)
    assert code == 1 and f"DAMAGE at {offset}: " in text


def _first_bad_item(data: bytes) -> int:
    """Offset of the first table item whose chunk is empty, backwards or over the max (a
    reading of spec/index.md of this test's own)."""
    cmax = struct.unpack_from("<Q", data, 40)[0]
    prev = 0
    for at in range(64, len(data) - 40, 40):
        end = struct.unpack_from("<Q", data, at)[0]
        if not prev < end <= prev + cmax:
            return at
        prev = end
    raise AssertionError("no bad item")


# conformance/corrupt_index_cases.py's corruptions of a golden index, and where each lies
# (n: the golden's item count, so its tail is at 64 + 40 n).
CONFORMANCE_AT: dict[str, Callable[[bytes, int], int]] = {
    "empty-file": lambda d, n: 0,
    "truncated-header": lambda d, n: 30,
    "truncated-mid-item": lambda d, n: 64 + 40 * 3,  # items 0-2 whole, 20 bytes of item 3
    "truncated-no-tail": lambda d, n: 64 + 40 * n,
    "truncated-mid-tail": lambda d, n: 64 + 40 * n,
    "bad-magic": lambda d, n: 8,
    "bad-table-magic": lambda d, n: 56,
    "garbled-tail-marker": lambda d, n: 64 + 40 * n + 32,
    "garbled-tail-zero-fill": lambda d, n: 64 + 40 * n + 8,
    "chunk-over-max": lambda d, n: _first_bad_item(d),
    "offsets-not-increasing": lambda d, n: _first_bad_item(d),
    "trailing-bytes": lambda d, n: 64 + 40 * n + 40,
    "wrong-tail-size": lambda d, n: 64 + 40 * n + 24,
}


def test_every_conformance_corruption_is_covered() -> None:
    assert set(CONFORMANCE_AT) == set(CORRUPTIONS)


@pytest.mark.parametrize("case", sorted(CONFORMANCE_AT))
def test_conformance_corruption(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = Path(golden_index_path(ERROR_CASE)).read_bytes()
    n = len(parse_index(golden).chunks)
    data = CORRUPTIONS[case].mutate(golden)
    if case in ("chunk-over-max", "offsets-not-increasing"):
        n = (len(data) - 104) // 40
    path = tmp_path / "damaged.caibx"
    path.write_bytes(data)
    code, doc = dump_json([str(path)], monkeypatch)
    assert code == 1
    assert doc["damage"][0]["offset"] == CONFORMANCE_AT[case](data, n)


# The hostile archives of tests/test_hostile_archives.py: the FILENAME record that breaks
# the format (which one: the name and its occurrence). "root-is-a-symlink" is a well-formed
# archive (extraction refuses it, not the format).
HOSTILE_AT = {"dotdot": (b"..", 0), "slash-into-canary": (b"../canary/x", 0),
              "absolute-into-canary": (b"CANARY/x", 0), "nul": (b"a\0b", 0), "long-name": (b"n" * 256, 0),
              "empty-name": (b"", 0), "duplicate": (b"a", 1), "out-of-order": (b"a", 0),
              "under-symlink-by-name": (b"l/x", 0), "symlink-then-dir": (b"l", 1),
              "dir-then-symlink-then-dir": (b"d", 1)}


def test_every_hostile_case_is_covered() -> None:
    assert set(CATAR_CASES) == {*HOSTILE_AT, "root-is-a-symlink"}


@pytest.mark.parametrize("case", sorted(HOSTILE_AT))
def test_hostile_archive(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = build(CATAR_CASES[case][0], tmp_path)
    name, nth = HOSTILE_AT[case]
    name = name.replace(b"CANARY", bytes(tmp_path))
    record = cb.record(cb.FILENAME, name + b"\0")
    offset = -1
    for _ in range(nth + 1):
        offset = archive.index(record, offset + 1)
    path = tmp_path / "x.catar"
    path.write_bytes(archive)
    code, doc = dump_json([str(path)], monkeypatch)
    assert code == 1
    assert [d["offset"] for d in doc["damage"]] == [offset]
    assert CATAR_CASES[case][1].replace("CANARY", str(tmp_path)) in doc["damage"][0]["message"]
    # Dissected up to the damage: the records before it, and the broken record itself when
    # its size was sound enough to read it.
    last = doc["records"][-1]
    end = last["offset"] + last["size"] if last["offset"] == offset else offset
    _tiles({**doc, "size": end})


def test_truncated_catar_names_where_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = (ROOT / "fixtures/desync/testdata/flat.catar").read_bytes()
    path = tmp_path / "x.catar"
    path.write_bytes(archive[:500])
    code, doc = dump_json([str(path)], monkeypatch)
    assert code == 1 and doc["damage"][0]["offset"] == 500
    assert struct.unpack_from("<Q", archive, 0)[0] == 64


def test_truncated_protocol_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = (ROOT / "fixtures/casync_protocol/client.bin").read_bytes()
    path = tmp_path / "x.bin"
    path.write_bytes(capture[:30])  # HELLO (24 bytes), then 6 bytes of a header
    code, doc = dump_json(["--type", "casync-protocol", str(path)], monkeypatch)
    assert code == 1
    assert [r["type"] for r in doc["records"]] == ["HELLO"]
    assert [d["offset"] for d in doc["damage"]] == [24]


def test_caidx_with_a_chunk_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    code, doc = dump_json(["-s", str(tmp_path / "empty"), "fixtures/catar/golden/basic-default.caidx"],
                          monkeypatch)
    assert code == 1 and doc["valid"] is False and doc["damage"] == []
    assert doc["stream"]["damage"][0]["offset"] == 0
    assert "not found" in doc["stream"]["damage"][0]["message"]


def test_stdin_by_content(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (ROOT / "fixtures/desync/testdata/flat.catar").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, doc = dump_json(["-"], monkeypatch)
    assert code == 0 and doc["type"] == "catar" and doc["size"] == len(data)
