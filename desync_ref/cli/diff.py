"""``diff [-s STORE]... [-c CACHE] [--explain --blob FILE] [-f text|json] A B``: how two
indexes or two archives differ, naming the known casync/desync divergences.

Spec: ``spec/diff.md``. Exit status as ``cmp``: 0 same, 1 different, 2 trouble; every
error here (unreadable or invalid input, bad arguments) is exit 2 with one line.
"""

from __future__ import annotations

import argparse
import os
import sys

from desync_ref.audit.diff_archive import Node, Path, diff_archives, read_caidx, read_catar
from desync_ref.audit.diff_index import diff_indexes, explain
from desync_ref.audit.diff_inputs import Kind, is_archive_index, sniff
from desync_ref.audit.diff_report import Report
from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    print_json,
    source_store,
    workers,
)
from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index

PROG = "desync-ref"
SAME, DIFFERENT, TROUBLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "diff", "Show how two indexes or two archives differ")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[],
                        help="store(s) holding the chunks of caidx inputs (archive diff)")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("--explain", action="store_true",
                        help="re-chunk the first differing chunk by casync's rules (needs --blob)")
    parser.add_argument("--blob", default="", help="the blob both indexes describe")
    parser.add_argument("-f", "--format", choices=("text", "json"), default="text",
                        help="output format, text or json")
    add_store_options(parser)
    parser.add_argument("a", metavar="A", help="index or catar")
    parser.add_argument("b", metavar="B", help="index or catar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = _diff(args)
    except (DesyncRefError, OSError) as exc:
        text = " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())
        where = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        print(f"{PROG}: diff: {text}{where}", file=sys.stderr)
        return TROUBLE
    if args.format == "json":
        print_json(report.as_json(), sys.stdout)
    else:
        sys.stdout.write("".join(line + "\n" for line in report.lines()))
    sys.stdout.flush()
    return SAME if report.same else DIFFERENT


def _diff(args: argparse.Namespace) -> Report:
    if args.explain and not args.blob:
        raise UsageError("--explain needs the blob (--blob FILE)")
    kinds: tuple[Kind, Kind] = (sniff(args.a), sniff(args.b))
    indexes = {loc: load_index(args, loc) for loc, kind in zip((args.a, args.b), kinds, strict=True)
               if kind == "index"}
    archive = "catar" in kinds or (bool(args.store) and all(map(is_archive_index, indexes.values())))
    if archive:
        if args.blob:
            raise UsageError("--blob and --explain are for indexes of a blob")
        if indexes and not args.store:
            raise UsageError("a caidx compared as an archive needs its store (-s STORE)")
        return diff_archives(_nodes(args, args.a, indexes), _nodes(args, args.b, indexes))
    a, b = indexes[args.a], indexes[args.b]
    report = diff_indexes(a, b)
    if is_archive_index(a) and is_archive_index(b):
        report.add("note", "both are archive indexes: -s STORE compares the archives instead",
                   difference=False)
    if args.blob:
        with open(args.blob, "rb") as blob:
            explain(report, a, b, blob, os.fstat(blob.fileno()).st_size)
    return report


def _nodes(args: argparse.Namespace, location: str, indexes: dict[str, Index]) -> dict[Path, Node]:
    index = indexes.get(location)
    if index is None:
        return read_catar(location)
    store = source_store(args, index)
    try:
        return read_caidx(index, store, workers(args))
    finally:
        store.close()
