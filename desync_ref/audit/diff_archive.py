"""``diff`` of two archives (``.catar``, or ``.caidx`` read through a store): every path
that differs, field by field, like ``diff -r`` with metadata.

Spec: ``spec/diff.md`` § "Archives". The archives are decoded by the validating catar
decoder (``formats/catar_decoder.py``, driven by ``operations/untar.py``'s walkers); each
node's ENTRY fields and records (``formats/catar.py``'s ``Entry``: casync ``src/caformat.h``)
are kept, a regular file's contents as a SHA-256 of its payload. Differences that are
known casync/desync divergences (``audit/deviations.py``) are named.
"""

from __future__ import annotations

import datetime
import hashlib
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from desync_ref.audit import deviations
from desync_ref.audit.deviations import Side
from desync_ref.audit.diff_index import compare_flags, flag_names
from desync_ref.audit.diff_report import Report
from desync_ref.formats import constants as c
from desync_ref.formats.catar import AclEntry, Entry
from desync_ref.formats.flag_rules import time_granularity
from desync_ref.formats.index import Index
from desync_ref.operations.untar import walk_file, walk_index
from desync_ref.stores import Store

Path = tuple[bytes, ...]


@dataclass(slots=True)
class Node:
    entry: Entry
    digest: bytes | None = None  # SHA-256 of a regular file's payload


class Collector:
    """An ``operations.untar.Sink`` that keeps every node, in archive order."""

    def __init__(self) -> None:
        self.nodes: dict[Path, Node] = {}
        self._file: Path | None = None
        self._hash = hashlib.sha256()

    def directory(self, path: list[bytes], e: Entry) -> None:
        self.nodes[tuple(path)] = Node(e)

    def begin_file(self, path: list[bytes], e: Entry) -> None:
        self._file = tuple(path)
        self.nodes[self._file] = Node(e)
        self._hash = hashlib.sha256()

    def file_data(self, data: bytes) -> None:
        self._hash.update(data)

    def end_file(self) -> None:
        assert self._file is not None
        self.nodes[self._file].digest = self._hash.digest()
        self._file = None

    def other(self, path: list[bytes], e: Entry) -> None:
        self.nodes[tuple(path)] = Node(e)

    def end_directory(self, path: list[bytes], e: Entry) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def read_catar(location: str) -> dict[Path, Node]:
    sink = Collector()
    walk_file(location, sink)
    return sink.nodes


def read_caidx(index: Index, store: Store, workers: int = 4) -> dict[Path, Node]:
    sink = Collector()
    walk_index(index, store, sink, workers=workers)
    return sink.nodes


# --- how fields are shown -------------------------------------------------------------------

_TYPES: Final = {stat.S_IFDIR: "directory", stat.S_IFREG: "regular file", stat.S_IFLNK: "symlink",
                 stat.S_IFBLK: "block device", stat.S_IFCHR: "character device",
                 stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}
# The record that ends a node of each type (after the metadata records).
_FINAL_RECORD: Final = {stat.S_IFREG: "PAYLOAD", stat.S_IFLNK: "SYMLINK", stat.S_IFBLK: "DEVICE",
                        stat.S_IFCHR: "DEVICE"}


def show_path(path: Path) -> str:
    return "./" + "/".join(p.decode("utf-8", "backslashreplace") for p in path) if path else "."


def _bytes(value: bytes) -> str:
    return repr(value)[1:]  # b'x' -> 'x', escapes kept


def show_time(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}.{frac:09d} UTC"


def _acl(entries: list[AclEntry]) -> str:
    return "[" + ", ".join(f"{e.id}:{e.permissions:o}" + (f"({_bytes(e.name)})" if e.name else "")
                           for e in entries) + "]"


def _truncation(a: int, b: int, flags_a: int, flags_b: int) -> str:
    """" (B truncated to microseconds)" when one time is the other rounded down, and
    whether that side's feature flags keep no finer times."""
    for unit, name in ((1000, "microseconds"), (10**9, "seconds"), (2 * 10**9, "2 seconds")):
        for side, long, short, flags in (("B", a, b, flags_b), ("A", b, a, flags_a)):
            if short == long - long % unit:
                why = f", as {side}'s feature flags keep" if time_granularity(flags) == unit else ""
                return f" ({side} truncated to {name}{why})"
    return ""


# Optional records: Entry attribute, record name, the feature flag that keeps it.
_RECORDS: Final[tuple[tuple[str, str, int, Callable[[object], str]], ...]] = (
    ("user", "USER", c.CA_FORMAT_WITH_USER_NAMES, lambda v: _bytes(v) if isinstance(v, bytes) else str(v)),
    ("group", "GROUP", c.CA_FORMAT_WITH_USER_NAMES, lambda v: _bytes(v) if isinstance(v, bytes) else str(v)),
    ("acl_user", "ACL_USER", c.CA_FORMAT_WITH_ACL, lambda v: _acl(v) if isinstance(v, list) else str(v)),
    ("acl_group", "ACL_GROUP", c.CA_FORMAT_WITH_ACL, lambda v: _acl(v) if isinstance(v, list) else str(v)),
    ("acl_group_obj", "ACL_GROUP_OBJ", c.CA_FORMAT_WITH_ACL, lambda v: f"{v:o}" if isinstance(v, int) else str(v)),
    ("acl_default", "ACL_DEFAULT", c.CA_FORMAT_WITH_ACL, str),
    ("acl_default_user", "ACL_DEFAULT_USER", c.CA_FORMAT_WITH_ACL, lambda v: _acl(v) if isinstance(v, list) else str(v)),
    ("acl_default_group", "ACL_DEFAULT_GROUP", c.CA_FORMAT_WITH_ACL, lambda v: _acl(v) if isinstance(v, list) else str(v)),
    ("selinux", "SELINUX", c.CA_FORMAT_WITH_SELINUX, lambda v: _bytes(v) if isinstance(v, bytes) else str(v)),
    ("fcaps", "FCAPS", c.CA_FORMAT_WITH_FCAPS, lambda v: v.hex() if isinstance(v, bytes) else str(v)),
    ("quota_projid", "QUOTA_PROJID", c.CA_FORMAT_WITH_QUOTA_PROJID, str),
)


def _absent(value: object) -> bool:
    return value is None or value == [] or value == 0


# --- comparing ------------------------------------------------------------------------------

class _Differ:
    def __init__(self, report: Report, a: dict[Path, Node], b: dict[Path, Node]) -> None:
        self.report, self.a, self.b = report, a, b
        self.flags_a = next(iter(a.values())).entry.feature_flags if a else 0
        self.flags_b = next(iter(b.values())).entry.feature_flags if b else 0
        self.count = 0  # paths that differ

    def add(self, path: Path, text: str, deviation: deviations.Deviation | None = None,
            side: Side | None = None) -> None:
        self.report.add(show_path(path), text, deviation, side)

    def lacks(self, path: Path, record: str, has: Side, bit: int) -> None:
        lacking: Side = "B" if has == "A" else "A"
        flags = self.flags_b if lacking == "B" else self.flags_a
        why = f" ({lacking}'s feature flags lack {'|'.join(flag_names(bit))})" if bit and not flags & bit else ""
        self.add(path, f"{lacking} lacks the {record} record{why}")

    def node(self, path: Path, na: Node, nb: Node) -> None:
        ea, eb = na.entry, nb.entry
        before = len(self.report.findings)
        ta, tb = stat.S_IFMT(ea.mode), stat.S_IFMT(eb.mode)
        if ta != tb:
            self.add(path, f"type differs: A {_TYPES[ta]}, B {_TYPES[tb]}")
            types: tuple[tuple[Side, int, int], ...] = (("A", ta, tb), ("B", tb, ta))
            for side, mine, theirs in types:
                record = _FINAL_RECORD.get(mine)
                if record is not None and _FINAL_RECORD.get(theirs) != record:
                    self.lacks(path, record, side, 0)
        elif stat.S_IMODE(ea.mode) != stat.S_IMODE(eb.mode):
            self.add(path, f"mode differs: A {stat.S_IMODE(ea.mode):04o}, B {stat.S_IMODE(eb.mode):04o}")
        for name in ("uid", "gid"):
            va, vb = getattr(ea, name), getattr(eb, name)
            if va != vb:
                self.add(path, f"{name} differs: A {va}, B {vb}")
        if ea.mtime != eb.mtime:
            self.add(path, f"mtime differs: A {show_time(ea.mtime)}, B {show_time(eb.mtime)}"
                     f"{_truncation(ea.mtime, eb.mtime, self.flags_a, self.flags_b)}")
        if ea.flags != eb.flags:
            self.add(path, f"file attribute flags differ: A 0x{ea.flags:x}, B 0x{eb.flags:x}")
        if ta == tb:
            self.contents(path, na, nb)
        self.xattrs(path, ea, eb)
        for attr, record, bit, show in _RECORDS:
            va, vb = getattr(ea, attr), getattr(eb, attr)
            if va == vb:
                continue
            if _absent(vb) and not _absent(va):
                self.lacks(path, record, "A", bit)
            elif _absent(va) and not _absent(vb):
                self.lacks(path, record, "B", bit)
            else:
                self.add(path, f"{record} differs: A {show(va)}, B {show(vb)}")
        if len(self.report.findings) > before:
            self.count += 1

    def contents(self, path: Path, na: Node, nb: Node) -> None:
        ea, eb = na.entry, nb.entry
        if ea.size != eb.size:
            self.add(path, f"size differs: A {ea.size}, B {eb.size}")
        elif na.digest != nb.digest:
            self.add(path, "contents differ (same size)")
        if ea.target != eb.target:
            self.add(path, f"symlink target differs: A {_bytes(ea.target or b'')}, "
                     f"B {_bytes(eb.target or b'')}")
        if ea.rdev != eb.rdev:
            def dev(rdev: tuple[int, int] | None) -> str:
                return f"{rdev[0]}:{rdev[1]}" if rdev else "-"
            self.add(path, f"device differs: A {dev(ea.rdev)}, B {dev(eb.rdev)}")

    def xattrs(self, path: Path, ea: Entry, eb: Entry) -> None:
        xa, xb = dict(ea.xattrs), dict(eb.xattrs)
        for name in sorted(xa.keys() | xb.keys()):
            va, vb = xa.get(name), xb.get(name)
            if va == vb:
                continue
            shown = _bytes(name)
            if vb is None:
                self.lacks(path, f"XATTR {shown}", "A", c.CA_FORMAT_WITH_XATTRS)
            elif va is None:
                self.lacks(path, f"XATTR {shown}", "B", c.CA_FORMAT_WITH_XATTRS)
            else:
                side = deviations.xattr_value(va, vb)
                self.add(path, f"XATTR {shown} differs: A {_bytes(va)}, B {_bytes(vb)}",
                         deviations.XATTR_NUL if side else None, side)

    def only(self, path: Path, side: Side, node: Node, excludes: set[Path], below: int) -> None:
        kind = _TYPES[stat.S_IFMT(node.entry.mode)]
        if below:
            kind += f", {below} entries below"
        desync = deviations.skipped_node(node.entry.mode, side)
        deviation = deviations.FIFOS_SOCKETS if desync else None
        if desync is None:
            other_flags = self.flags_a if side == "B" else self.flags_b
            desync = deviations.not_excluded(path, side, excludes, other_flags)
            deviation = deviations.CAEXCLUDE if desync else None
        self.report.add(f"Only in {side}", f"{show_path(path)} ({kind})", deviation, desync)
        self.count += 1


def _caexclude_dirs(nodes: dict[Path, Node]) -> set[Path]:
    return {path[:-1] for path in nodes if path and path[-1] == b".caexclude"}


def diff_archives(a: dict[Path, Node], b: dict[Path, Node]) -> Report:
    """Every difference between two decoded archives, in archive order."""
    report = Report("archive")
    d = _Differ(report, a, b)
    tar_side = deviations.entry_flags(d.flags_a, d.flags_b)
    known = [(deviations.ENTRY_FLAGS, tar_side)] if tar_side else []
    compare_flags(report, "archive feature flags", d.flags_a, d.flags_b, known)
    first = len(report.findings)
    excludes: dict[Side, set[Path]] = {"A": _caexclude_dirs(a), "B": _caexclude_dirs(b)}
    paths = sorted(a.keys() | b.keys())
    skip: Path | None = None  # a directory on one side only: its contents are not listed
    for n, path in enumerate(paths):
        if skip is not None and path[:len(skip)] == skip:
            continue
        skip = None
        na, nb = a.get(path), b.get(path)
        if na is not None and nb is not None:
            d.node(path, na, nb)
            continue
        side: Side = "A" if na is not None else "B"
        node = na or nb
        assert node is not None
        below = 0
        while n + 1 + below < len(paths) and paths[n + 1 + below][:len(path)] == path:
            below += 1
        d.only(path, side, node, excludes[side], below)
        skip = path
    if len(report.findings) > first:
        f = report.findings[first]
        report.findings.insert(first, type(f)("first difference", f"{f.where}: {f.text}",
                                          difference=False))
    report.summary.append(f"summary: {len(a)} entries in A, {len(b)} in B; {d.count} paths "
                          f"differ ({sum(1 for p in a if p not in b)} only in A, "
                          f"{sum(1 for p in b if p not in a)} only in B)")
    return report
