"""``diff`` of indexes: casync's against desync's, and ``--explain`` on the chunker rules
where desync differs from casync (spec/diff.md, spec/deviations.md § Chunker)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from pathlib import Path

import pytest

from desync_ref import kernels
from desync_ref.audit import deviations
from desync_ref.chunking import ChunkSizes, discriminator_from_avg
from desync_ref.formats.index import Index, IndexChunk, encode_index
from tests.conftest import ROOT, assert_clean_failure, run_cli
from tests.test_core_chunker import craft_cut_at_min

SMALL = ChunkSizes(2048, 8192, 32768)


def casync_index(casync: str, tmp: Path, blob: Path, sizes: ChunkSizes, name: str = "casync.caibx") -> Path:
    out = tmp / name
    subprocess.run([casync, "make", f"--chunk-size={sizes.min}:{sizes.avg}:{sizes.max}", str(out),
                    str(blob)], check=True, capture_output=True)
    return out


def desync_rule_index(data: bytes, sizes: ChunkSizes, out: Path) -> Path:
    """An index as desync's chunker cuts (spec/deviations.md § Chunker): first candidate
    min + 1, discriminator not clamped; flags 0xA0... as desync's make writes."""
    find_cut = kernels.load("chunker").find_cut
    d = discriminator_from_avg(sizes.avg)
    chunks, pos = [], 0
    while pos < len(data):
        cut = find_cut(data, pos, len(data), sizes.min + 1, sizes.max, d)
        cut = len(data) if cut < 0 else cut
        chunks.append(IndexChunk(pos, cut - pos, hashlib.new("sha512_256", data[pos:cut]).digest()))
        pos = cut
    out.write_bytes(encode_index(Index(deviations.DESYNC_BLOB_FLAGS, sizes.min, sizes.avg,
                                       sizes.max, chunks)))
    return out


def diff_json(*args: object) -> tuple[int, dict[str, object]]:
    proc = run_cli(["diff", "-f", "json", *map(str, args)], check=False)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def differences(report: dict[str, object]) -> list[str]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return [f"{f['where']}: {f['text']}" for f in findings if f["difference"]]


def known(report: dict[str, object]) -> list[tuple[str, str]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return [(f["deviation"]["key"], f["deviation"]["side"]) for f in findings if "deviation" in f]


def test_casync_and_desync_chunker_index_differ_in_the_flags_only(
        casync: str, peer: Path, tmp_path: Path) -> None:
    data = peer / "testdata" / "chunker.input"
    ours = casync_index(casync, tmp_path, data, ChunkSizes(16384, 65536, 262144))
    theirs = peer / "testdata" / "chunker.index"
    code, report = diff_json(ours, theirs)
    assert code == 1
    assert differences(report) == ["feature flags: A has EXCLUDE_FILE, B lacks it"]
    assert known(report) == [("blob-index-flags", "B")]
    text = run_cli(["diff", ours, theirs], check=False)
    assert text.returncode == 1
    assert "chunks: the same 20 chunks" in text.stdout.decode()
    assert "20 shared, 0 only in A, 0 only in B" in text.stdout.decode()


def test_same_index_exits_0(peer: Path) -> None:
    index = peer / "testdata" / "chunker.index"
    code, report = diff_json(index, index)
    assert code == 0 and report["same"] is True and differences(report) == []


def test_blob1_and_blob2_part_at_their_first_changed_chunk(peer: Path) -> None:
    a, b = peer / "testdata" / "blob1.caibx", peer / "testdata" / "blob2.caibx"
    code, report = diff_json(a, b)
    assert code == 1
    lines = differences(report)
    assert len(lines) == 1 and lines[0].startswith("first difference: chunk ")
    # The reported offset is where the two tables stop agreeing, checked here from the tables.
    from desync_ref.formats.index import parse_index
    ia, ib = (parse_index(p.read_bytes()) for p in (a, b))
    n = next(i for i, (x, y) in enumerate(zip(ia.chunks, ib.chunks, strict=False)) if x != y)
    assert lines[0].startswith(f"first difference: chunk {n} at offset {ia.chunks[n].start}:")
    summary = report["summary"]
    assert isinstance(summary, list)
    shared = len({c.id for c in ia.chunks} & {c.id for c in ib.chunks})
    assert f"{shared} shared" in summary[0]


def test_explain_names_the_cut_at_min_difference(casync: str, tmp_path: Path) -> None:
    data = craft_cut_at_min(SMALL, seed=5)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    ours = casync_index(casync, tmp_path, blob, SMALL)
    theirs = desync_rule_index(data, SMALL, tmp_path / "desync.caibx")
    code, report = diff_json("--explain", "--blob", blob, ours, theirs)
    assert code == 1
    assert ("cut-at-min", "B") in known(report)
    text = run_cli(["diff", "--explain", "--blob", blob, ours, theirs], check=False).stdout.decode()
    assert "first difference: chunk 0 at offset 0: A cuts at 2048 (2048 bytes)" in text
    assert "A follows casync's rules" in text
    assert "B never cuts at exactly min: desync's known chunker difference" in text
    # Sides swapped: the same facts, named for A.
    _, swapped = diff_json("--explain", "--blob", blob, theirs, ours)
    assert ("cut-at-min", "A") in known(swapped)


def test_explain_names_the_discriminator_clamp(casync: str, tmp_path: Path) -> None:
    sizes = ChunkSizes(65536, 65536, 262144)  # casync clamps d to 65536, desync keeps ~49k
    data = random.Random(9).randbytes(1_500_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    ours = casync_index(casync, tmp_path, blob, sizes)
    theirs = desync_rule_index(data, sizes, tmp_path / "desync.caibx")
    code, report = diff_json("--explain", "--blob", blob, ours, theirs)
    assert code == 1
    assert ("discriminator-clamp", "B") in known(report)


def test_explain_on_ids_says_which_matches_the_blob(casync: str, tmp_path: Path) -> None:
    data = random.Random(4).randbytes(100_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    ours = casync_index(casync, tmp_path, blob, SMALL)
    raw = bytearray(ours.read_bytes())
    raw[48 + 16 + 8] ^= 1  # first id of the table
    bad = tmp_path / "bad.caibx"
    bad.write_bytes(raw)
    out = run_cli(["diff", "--explain", "--blob", blob, ours, bad], check=False)
    assert out.returncode == 1
    text = out.stdout.decode()
    assert "same boundary" in text
    assert "A's id of chunk 0 matches the blob's bytes" in text
    assert "B's id of chunk 0 does not match the blob's bytes" in text


@pytest.mark.parametrize("case", ["missing", "not-an-index", "truncated", "explain-no-blob"])
def test_trouble_exits_2_with_one_line(peer: Path, tmp_path: Path, case: str) -> None:
    good = peer / "testdata" / "chunker.index"
    other = {"missing": tmp_path / "nope.caibx", "not-an-index": peer / "testdata" / "blob1",
             "truncated": tmp_path / "short.caibx", "explain-no-blob": good}[case]
    (tmp_path / "short.caibx").write_bytes(good.read_bytes()[:100])
    extra = ["--explain"] if case == "explain-no-blob" else []
    proc = run_cli(["diff", *extra, good, other], check=False)
    err = assert_clean_failure(proc)
    assert proc.returncode == 2, err
    assert proc.stdout == b""


def test_every_known_difference_is_a_row_of_the_deviations_page() -> None:
    page = (ROOT / "spec" / "deviations.md").read_text()
    sections = re.split(r"^## ", page, flags=re.M)
    for deviation in deviations.DEVIATIONS:
        section = next((s for s in sections if s.startswith(deviation.section + "\n")), None)
        assert section is not None, deviation.section
        assert f"| {deviation.topic} |" in section, deviation.topic
    assert len({d.key for d in deviations.DEVIATIONS}) == len(deviations.DEVIATIONS)


def test_explain_does_not_blame_desync_for_any_other_cut(casync: str, tmp_path: Path) -> None:
    data = craft_cut_at_min(SMALL, seed=5)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    ours = casync_index(casync, tmp_path, blob, SMALL)
    from desync_ref.formats.index import parse_index
    index = parse_index(ours.read_bytes())
    # A first cut 100 bytes past min: neither casync's (at min) nor desync's rules.
    second = index.chunks[1]
    cut = SMALL.min + 100

    def chunk(start: int, end: int) -> IndexChunk:
        return IndexChunk(start, end - start, hashlib.new("sha512_256", data[start:end]).digest())

    odd = tmp_path / "odd.caibx"
    odd.write_bytes(encode_index(Index(index.feature_flags, SMALL.min, SMALL.avg, SMALL.max,
                                       [chunk(0, cut), chunk(cut, second.end), *index.chunks[2:]])))
    code, report = diff_json("--explain", "--blob", blob, ours, odd)
    assert code == 1
    assert known(report) == []
    findings = report["findings"]
    assert isinstance(findings, list)
    assert any(f["text"] == "B follows neither casync's rules nor a known desync difference"
               for f in findings)
