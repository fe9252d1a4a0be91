"""Committed casync-made golden files (fixtures/catar/golden, spec/catar.md § Fixtures)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.catar.make_golden import GOLDEN, GOLDEN_SETS, committed_problems
from fixtures.catar.trees import build
from tests.conftest import run_cli
from tests.treesnap import assert_same_tree, snapshot

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def _flags(set_name: str) -> list[str]:
    return [] if set_name == "default" else [f"--with={f}" for f in GOLDEN_SETS[set_name]]


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if n.endswith(".catar")))
def test_golden_untar_tar_round_trip(casync: str, tmp_path: Path, name: str) -> None:
    """untar casync's golden catar, tar it again with the same flags: the same bytes; and
    the tree untar wrote is the one casync extracts from it, node for node."""
    golden = GOLDEN / name
    set_name = name.split("-", 1)[1].removesuffix(".catar")
    run_cli(["untar", golden, tmp_path / "o"])
    run_cli(["tar", *_flags(set_name), tmp_path / "again.catar", tmp_path / "o"])
    assert (tmp_path / "again.catar").read_bytes() == golden.read_bytes()
    if name.startswith("awkward-"):
        return  # casync cannot extract its 255-byte name (its temporary name is longer)
    subprocess.run([casync, "extract", str(golden), str(tmp_path / "theirs")], check=True,
                   capture_output=True)
    if "read-only" not in GOLDEN_SETS[set_name]:
        assert_same_tree(tmp_path / "o", tmp_path / "theirs")
        return
    # A read-only archive keeps only 0666/0777 or 0444/0555. untar applies that mode, as
    # desync does (localfs.go); casync instead only drops write bits from the mode it
    # created the node with, so modes are compared with the archive's rule, not casync's.
    ours = assert_same_tree(tmp_path / "o", tmp_path / "theirs", ignore=("mode",))
    theirs = snapshot(tmp_path / "theirs")
    for path, n in ours.items():
        writable = int(theirs[path]["mode"], 8) & 0o200
        if n["type"] != "l":
            assert n["mode"] == {("d", True): "0777", ("d", False): "0555",
                                 ("-", True): "0666", ("-", False): "0444"}[n["type"], bool(writable)]


def test_golden_fresh_tree(tmp_path: Path) -> None:
    """The tree builder is deterministic: a fresh tree archives to the golden bytes (when
    this file system keeps the same xattrs and ACLs as the one that made them)."""
    src = build(tmp_path, "awkward", privileged=False)
    run_cli(["tar", tmp_path / "a.catar", src])
    assert (tmp_path / "a.catar").read_bytes() == (GOLDEN / "awkward-default.catar").read_bytes()


def test_golden_caidx(casync: str, tmp_path: Path) -> None:
    store, caidx = GOLDEN / "basic-default.store", GOLDEN / "basic-default.caidx"
    run_cli(["untar", "-i", "-s", store, caidx, tmp_path / "o"])
    subprocess.run([casync, "extract", f"--store={store}", str(caidx), str(tmp_path / "theirs")],
                   check=True, capture_output=True)
    assert_same_tree(tmp_path / "o", tmp_path / "theirs")
    run_cli(["tar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx", tmp_path / "o"])
    assert (tmp_path / "x.caidx").read_bytes() == caidx.read_bytes()
    ids = run_cli(["list-chunks", caidx]).stdout.decode().split()
    assert {f"{i}.cacnk" for i in ids} == {p.name for p in store.rglob("*.cacnk")}
    info = json.loads(run_cli(["info", "-s", store, caidx]).stdout)
    # the caidx covers the default catar of the same tree, all of it in the store
    assert (info["total"], info["unique"], info["in-store"]) == (len(ids), len(set(ids)), len(set(ids)))
    assert info["size"] == MANIFEST["basic-default.catar"]["size"]


def test_committed_files_match_manifest() -> None:
    """Every manifest entry has its committed file with that size and sha256; every
    committed file is in the manifest or is a chunk of the caidx's store."""
    stores = {meta["store"] for meta in MANIFEST.values() if "store" in meta}
    assert stores == {"basic-default.store"}
    for name, meta in MANIFEST.items():
        data = (GOLDEN / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["size"], meta["sha256"]), name
    files = {p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*") if p.is_file()}
    chunks = {f for f in files if f.startswith("basic-default.store/")}
    assert files - chunks == set(MANIFEST) | {"manifest.json"}
    listed = run_cli(["list-chunks", GOLDEN / "basic-default.caidx"]).stdout.decode().split()
    assert chunks == {f"basic-default.store/{c[:4]}/{c}.cacnk" for c in listed}


def test_make_golden_check_sees_committed_files(tmp_path: Path) -> None:
    """``make_golden.py --check``'s look at the committed files: clean as committed, and a
    changed byte, a missing file or a stray file is reported."""
    assert committed_problems() == []
    copy = tmp_path / "golden"
    subprocess.run(["cp", "-a", str(GOLDEN), str(copy)], check=True)
    victim = copy / "wide-unix.catar"
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    (copy / "deep-best.catar").unlink()
    (copy / "stray.catar").write_bytes(b"x")
    assert committed_problems(copy) == ["deep-best.catar: in the manifest, no file",
                                        "wide-unix.catar: committed file does not match the manifest",
                                        "stray.catar: not in the manifest"]


def test_make_golden_check_runs(casync: str) -> None:
    proc = subprocess.run([sys.executable, str(GOLDEN.parent / "make_golden.py"), "--check",
                           "--casync", casync], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
