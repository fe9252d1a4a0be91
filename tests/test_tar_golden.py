"""Committed casync-made golden files (fixtures/catar/golden, spec/catar.md § Fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.catar.make_golden import GOLDEN, GOLDEN_SETS
from fixtures.catar.trees import build
from tests.conftest import run_cli

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def _flags(set_name: str) -> list[str]:
    return [] if set_name == "default" else [f"--with={f}" for f in GOLDEN_SETS[set_name]]


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if n.endswith(".catar")))
def test_golden_untar_tar_round_trip(tmp_path: Path, name: str) -> None:
    """untar casync's golden catar, tar it again with the same flags: the same bytes."""
    golden = GOLDEN / name
    set_name = name.split("-", 1)[1].removesuffix(".catar")
    run_cli(["untar", golden, tmp_path / "o"])
    run_cli(["tar", *_flags(set_name), tmp_path / "again.catar", tmp_path / "o"])
    assert (tmp_path / "again.catar").read_bytes() == golden.read_bytes()


def test_golden_fresh_tree(tmp_path: Path) -> None:
    """The tree builder is deterministic: a fresh tree archives to the golden bytes (when
    this file system keeps the same xattrs and ACLs as the one that made them)."""
    src = build(tmp_path, "awkward", privileged=False)
    run_cli(["tar", tmp_path / "a.catar", src])
    assert (tmp_path / "a.catar").read_bytes() == (GOLDEN / "awkward-default.catar").read_bytes()


def test_golden_caidx(tmp_path: Path) -> None:
    run_cli(["untar", "-i", "-s", GOLDEN / "basic-default.store", GOLDEN / "basic-default.caidx",
             tmp_path / "o"])
    run_cli(["tar", "-i", "-s", tmp_path / "s", tmp_path / "x.caidx", tmp_path / "o"])
    assert (tmp_path / "x.caidx").read_bytes() == (GOLDEN / "basic-default.caidx").read_bytes()
    run_cli(["list-chunks", GOLDEN / "basic-default.caidx"])
    run_cli(["info", "-s", GOLDEN / "basic-default.store", GOLDEN / "basic-default.caidx"])
