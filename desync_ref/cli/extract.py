"""``extract [-s STORE]... [-c CACHE] [-n N] [-k] [--seed INDEX[:DATA]]... [--seed-dir DIR]...
[--skip-invalid-seeds | --regenerate-invalid-seeds] [--punch-holes=BOOL] [--print-stats] INDEX OUT``.

Flags and messages follow desync's ``cmd/desync/extract.go``; ``--punch-holes`` is casync's
(``casync --help``: ``--punch-holes=no``). Spec: spec/extract.md,
spec/index.md, spec/store.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from desync_ref.cli.common import (
    AppendSlice,
    _bool_flag,
    add_command,
    add_store_options,
    load_index,
    print_json,
    source_store,
    store_options,
    workers,
)
from desync_ref.cli.seed_options import add_seed_options, seed_specs
from desync_ref.cli.usage import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "extract", "Read an index and build a blob from it")
    parser.add_argument("-s", "--store", action=AppendSlice, help="source store(s)")
    add_seed_options(parser)
    parser.add_argument("--skip-invalid-seeds", action="store_true",
                        help="skip seeds with invalid chunks")
    parser.add_argument("--regenerate-invalid-seeds", action="store_true",
                        help="regenerate seed indexes with invalid chunks (in memory)")
    parser.add_argument("-c", "--cache", help="store to be used as cache")
    parser.add_argument("-k", "--in-place", action="store_true",
                        help="extract the file in place and keep chunks that are already correct")
    parser.add_argument("--punch-holes", type=_bool_flag, default=True, metavar="BOOL",
                        help="write runs of zeros as holes (sparse file), as casync does; "
                             "'no' writes every byte (default yes)")
    parser.add_argument("--print-stats", action="store_true",
                        help="print extraction statistics to stdout when done")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("output", help="output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: parsing the command line does not load what extracting needs.
    from desync_ref.operations.extract import InvalidSeedAction, extract
    from desync_ref.operations.seeds import open_seeds
    from desync_ref.progress import progress

    if args.index == args.output:
        raise UsageError("input and output filenames match")
    if args.skip_invalid_seeds and args.regenerate_invalid_seeds:
        raise UsageError("is not possible to use at the same time --skip-invalid-seeds and "
                         "--regenerate-invalid-seeds")
    action = (InvalidSeedAction.SKIP if args.skip_invalid_seeds else
              InvalidSeedAction.REGENERATE if args.regenerate_invalid_seeds else
              InvalidSeedAction.BAIL_OUT)
    index = load_index(args, args.index)
    specs = seed_specs(args, args.index)
    n = workers(args)
    seeds = open_seeds(specs, index, args.output, store_options(args), n)
    store = source_store(args, index)
    try:
        # Worker processes (on a local store): one per core, -n caps them.
        processes = min(n, os.cpu_count() or 1)
        stats = extract(index, store, args.output, in_place=args.in_place, workers=n,
                        seeds=seeds, action=action, processes=processes,
                        holes=args.punch_holes, progress=progress)
    finally:
        store.close()
    if args.print_stats:
        print_json(stats.as_json(), sys.stdout)
    return 0
