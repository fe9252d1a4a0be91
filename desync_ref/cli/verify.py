"""``verify -s STORE [-r] [-n N]``: check every chunk of a local store (desync
``cmd/desync/verify.go``, ``local.go`` ``Verify``). Spec: ``spec/store.md``.

Each invalid chunk is reported on stderr (with ``: removed`` when ``-r`` deleted it); as in
desync the exit status stays 0 when the store could be walked. A chunk that cannot be read
is reported too, never removed, and makes the run fail (exit 1) once the walk is done.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import (
    DEFAULT_CONCURRENCY,
    add_command,
    make_digest,
    store_options,
    workers,
)
from desync_ref.cli.usage import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "verify", "Read chunks in a store and verify their integrity")
    parser.add_argument("-s", "--store", default="", help="local store to verify")
    parser.add_argument("-n", "--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="number of concurrent operations")
    parser.add_argument("-r", "--repair", action="store_true",
                        help="remove invalid chunks from the store")
    parser.set_defaults(run=run)


def _report(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no store provided")
    # Imported here: parsing the command line does not load what verifying needs.
    from desync_ref.formats.chunk import digest_function
    from desync_ref.operations.verify import verify_store
    from desync_ref.progress import progress
    from desync_ref.stores.location import open_write_store

    # The store's config entry decides which chunk files are its own (desync runVerify
    # passes GetStoreOptionsFor(store)): an encrypted store's are named by its key.
    store = open_write_store(args.store, store_options(args), create=False)
    verify_store(store, digest_function(make_digest(args)), repair=args.repair,
                 workers=workers(args), report=_report, progress=progress)
    return 0
