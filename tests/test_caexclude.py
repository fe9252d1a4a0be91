""".caexclude files against casync: the same tree gives the same catar and caidx bytes
(spec/catar.md § "Exclusion files")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from desync_ref.fs import exclude
from tests.conftest import assert_clean_failure, run_cli

# The tree walk is what is tested; the chunker's kernels have their own compiled/pure tests.
pytestmark = pytest.mark.compiled_pass_only

# desync_ref's default flag set, spelled for casync (spec/deviations.md § catar archives).
WITH = ["--with=32bit-uids", "--with=nsec-time", "--with=permissions", "--with=symlinks",
        "--with=device-nodes", "--with=fifos", "--with=sockets", "--with=xattrs"]


def _tree(root: Path, files: dict[str, bytes | None]) -> Path:
    """Files (``None``: a directory) below ``root``; a fixed mtime so both tools see one tree."""
    root.mkdir()
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(data)
    return root


def _casync_listing(casync: str, archive: Path) -> list[str]:
    out = subprocess.run([casync, "list", str(archive)], capture_output=True, check=True).stdout
    return sorted(line.split(" ", 1)[1] for line in out.decode().splitlines())


def _same_catar(casync: str, tmp_path: Path, tree: Path) -> list[str]:
    """Our catar of ``tree`` equals casync's; returns the paths the archive holds."""
    theirs, ours = tmp_path / "casync.catar", tmp_path / "ours.catar"
    subprocess.run([casync, "make", *WITH, str(theirs), str(tree)], check=True, capture_output=True)
    run_cli(["tar", ours, tree])
    assert ours.read_bytes() == theirs.read_bytes()
    return _casync_listing(casync, ours)


TREE = {
    "a.o": b"a", "b.c": b"b", "keep.o": b"k", ".hidden.o": b"h", "star*": b"s",
    "n1": b"1", "n2": b"2", "nx": b"x", "build/z": b"z", "top/x.o": b"x", "top/build/w": b"w",
    "top/deep/y.o": b"y", "top/deep/keep.o": b"k", "top/deep/tmp": b"t", "only/dir/f": b"f",
    "only/file": b"g", "logs": b"plain file named like a directory pattern",
    "cache/logs/l": b"l", "crlf": b"c",
    ".caexclude": (b"# comment\n\n  *.o\t\n!keep.o\nbuild/\nlogs/\n/n[[:digit:]]\n"
                   b"star\\*\n*/deep/tmp\nonly/dir\ncrlf\r\n"),
    "top/.caexclude": b"/x.o\0!y.o",
}


def test_rules_match_casync(casync: str, tmp_path: Path) -> None:
    listing = _same_catar(casync, tmp_path, _tree(tmp_path / "tree", TREE))
    # What casync's rules keep, so the tree is known to exercise each rule.
    assert listing == sorted([
        ".", ".caexclude",
        ".hidden.o",  # FNM_PERIOD: '*' does not match a leading dot
        "b.c", "cache", "cache/logs", "cache/logs/l",  # "logs/" is anchored: top level only
        "crlf",  # the \r is part of the pattern
        "keep.o",  # negation wins over '*.o', whatever the order
        "logs",  # a directory-only pattern leaves files alone
        "nx", "only", "only/file",  # "only/dir" removes the directory only
        "top", "top/.caexclude", "top/build", "top/build/w",  # "build/" is anchored
        "top/deep", "top/deep/keep.o", "top/deep/y.o",  # the nested "!y.o" re-includes
    ])


def test_index_matches_casync(casync: str, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {**TREE, "big": bytes(range(256)) * 2000})
    theirs, ours = tmp_path / "casync.caidx", tmp_path / "ours.caidx"
    subprocess.run([casync, "make", *WITH, f"--store={tmp_path / 'cstore'}", str(theirs), str(tree)],
                   check=True, capture_output=True)
    run_cli(["tar", "-i", "-s", tmp_path / "store", ours, tree])
    assert ours.read_bytes() == theirs.read_bytes()


def test_excluded_directory_hides_its_exclude_file(casync: str, tmp_path: Path) -> None:
    # A broken .caexclude inside an excluded directory is never read, by either tool.
    tree = _tree(tmp_path / "tree", {".caexclude": b"skip\n", "skip/.caexclude": b"/\n",
                                     "skip/f": b"f", "f": b"f"})
    assert _same_catar(casync, tmp_path, tree) == [".", ".caexclude", "f"]


@pytest.mark.parametrize("content", [b"/\n", b"a/./b\n", b"a/../b\n", b"!\n",
                                     b"x" * exclude.LINE_LIMIT + b"\n"],
                         ids=["slash", "dot", "dotdot", "bang", "long-line"])
def test_bad_lines_fail_like_casync(casync: str, tmp_path: Path, content: bytes) -> None:
    tree = _tree(tmp_path / "tree", {"sub/.caexclude": content, "sub/f": b"f"})
    theirs = subprocess.run([casync, "make", *WITH, str(tmp_path / "c.catar"), str(tree)],
                            capture_output=True)
    assert theirs.returncode != 0
    err = assert_clean_failure(run_cli(["tar", tmp_path / "o.catar", tree], check=False))
    assert "sub/.caexclude: line 1" in err


def test_longest_line_is_accepted(casync: str, tmp_path: Path) -> None:
    long_name = b"y" * (exclude.LINE_LIMIT - 1)
    tree = _tree(tmp_path / "tree", {".caexclude": long_name + b"\n*.tmp", "f.tmp": b"", "g": b""})
    assert _same_catar(casync, tmp_path, tree) == [".", ".caexclude", "g"]


def test_parse_line_structure() -> None:
    """The pattern tree casync's ``ca_match_dump`` would show for a few lines."""
    p = exclude.parse_line(b"!//a//b/")
    assert (p.kind, p.name, p.anchored, p.directory_only) == (exclude.Kind.INNER, b"a", True, True)
    (child,) = p.children
    assert (child.kind, child.name, child.anchored, child.directory_only) == \
        (exclude.Kind.NEGATIVE, b"b", True, True)
    q = exclude.parse_line(b"*.o")
    assert (q.kind, q.anchored, q.directory_only, q.children) == \
        (exclude.Kind.POSITIVE, False, False, ())
