"""``tar [-i -s STORE] [-m ...] [--input-format disk|tar] [--no-time] [--tar-add-root] [-x]
[--with FLAG]... [--without FLAG]... CATAR|CAIDX SOURCE`` (spec/catar.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from desync_ref.cli.common import (
    add_chunk_size_option,
    add_command,
    add_store_options,
    chunk_sizes,
    make_digest,
    make_workers,
    store_options,
)
from desync_ref.cli.usage import UsageError
from desync_ref.formats.constants import FEATURE_FLAG_NAMES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "tar", "Store a directory tree in a catar archive or index")
    parser.add_argument("-s", "--store", help="target store (used with -i)")
    add_chunk_size_option(parser)
    parser.add_argument("-i", "--index", action="store_true",
                        help="create index file (caidx), not catar")
    parser.add_argument("--input-format", choices=("disk", "tar"), default="disk",
                        help="input format, 'disk' or 'tar'")
    parser.add_argument("--no-time", action="store_true",
                        help="set file timestamps to zero in the archive")
    parser.add_argument("--tar-add-root", action="store_true",
                        help="pretend that all tar elements have a common root directory")
    parser.add_argument("-x", "--one-file-system", action="store_true",
                        help="don't cross filesystem boundaries")
    parser.add_argument("--with", dest="with_flags", action="append", default=[],
                        metavar="FLAG", help="casync feature flag to use (replaces the default set)")
    parser.add_argument("--without", dest="without_flags", action="append", default=[],
                        metavar="FLAG", help="casync feature flag to leave out")
    parser.add_argument("--print-stats", action="store_true",
                        help="print chunking statistics to stderr when done (with -i)")
    add_store_options(parser, default_concurrency=None)
    parser.add_argument("output", help="catar or caidx to write ('-' for stdout)")
    parser.add_argument("source", help="directory, or tar stream with --input-format tar "
                        "('-' for stdin)")
    parser.set_defaults(run=run)


def parse_flag_names(names: Iterable[str]) -> int:
    """The bits of casync feature-flag names (each value may list several, comma-separated)."""
    value = 0
    for name in names:
        for part in name.split(","):
            bit = FEATURE_FLAG_NAMES.get(part.strip())
            if bit is None:
                raise UsageError(f"unknown feature flag '{part}' (casync's names: "
                                 f"{', '.join(sorted(FEATURE_FLAG_NAMES))})")
            value |= bit
    return value


def run(args: argparse.Namespace) -> int:
    if args.index and not args.store:
        raise UsageError("-i requires a store (-s <location>)")
    if args.store and not args.index:
        raise UsageError("-s is only used with -i")
    # Imported here: parsing the command line does not load the catar writer and the stores.
    from desync_ref.fs.atomic import atomic_output
    from desync_ref.operations.files import STDIO, write_index_file
    from desync_ref.operations.tar import archive_flags, index_stream, write_catar
    from desync_ref.progress import progress
    from desync_ref.stores.location import open_write_store

    with_bits = parse_flag_names(args.with_flags)
    flags = archive_flags(with_bits, parse_flag_names(args.without_flags),
                          digest=make_digest(args), one_file_system=args.one_file_system)

    def produce(write: Callable[[bytes], object]) -> None:
        if args.input_format == "tar":
            from desync_ref.formats.tarstream import write_catar_from_tar  # loads tarfile

            source = sys.stdin.buffer if args.source == STDIO else None
            write_catar_from_tar(args.source, write, flags, stream=source,
                                 no_time=args.no_time, add_root=args.tar_add_root)
        else:
            write_catar(args.source, write, flags, no_time=args.no_time)

    if not args.index:
        if args.output == STDIO:
            produce(sys.stdout.buffer.write)
            sys.stdout.buffer.flush()
        else:
            with atomic_output(args.output) as out:
                produce(out.write)
        return 0
    store = open_write_store(args.store, store_options(args))
    try:
        index, stats = index_stream(produce, flags, chunk_sizes(args), digest=make_digest(args),
                                    store=store, workers=make_workers(args), progress=progress)
    finally:
        store.close()
    if args.print_stats:
        import json

        json.dump({"chunks-produced": stats.chunks, "chunks-unique": stats.unique,
                   "chunks-stored": stats.stored, "size": stats.bytes}, sys.stderr, indent=2)
        sys.stderr.write("\n")
    write_index_file(index, args.output)
    return 0
