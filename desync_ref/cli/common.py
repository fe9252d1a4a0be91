"""Options shared by several commands, named as desync names them (``cmd/desync/options.go``)."""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Sequence
from typing import Any, TextIO

from desync_ref.chunking import DEFAULT_CHUNK_SIZES, ChunkSizes, parse_chunk_sizes
from desync_ref.formats.chunk import DIGEST_SHA512_256, DIGESTS, Digest, digest_function
from desync_ref.formats.index import Index
from desync_ref.operations.files import read_index
from desync_ref.stores import Store
from desync_ref.stores.location import StoreOptions, open_chain

DEFAULT_CONCURRENCY = 10


def add_global_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """desync's persistent flags; accepted before or after the command name."""
    # On a subcommand the defaults are suppressed so they don't overwrite the top level's.
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--config", default=default(None), help="config file")
    parser.add_argument("--digest", choices=DIGESTS, default=default(None),
                        help="digest algorithm, sha512-256 (default) or sha256")
    parser.add_argument("--verbose", action="store_true", default=default(False), help="verbose mode")


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_global_options(parser)
    return parser


def add_store_options(parser: argparse.ArgumentParser, *,
                      default_concurrency: int | None = DEFAULT_CONCURRENCY) -> None:
    parser.add_argument("-n", "--concurrency", type=int, default=default_concurrency,
                        help="number of concurrent operations")
    parser.add_argument("-r", "--cache-repair", type=_bool_flag, nargs="?", const=True,
                        default=True, help="replace invalid chunks in the cache from source")
    parser.add_argument("-u", "--uncompressed", action="store_true",
                        help="store chunks uncompressed")


class AppendSlice(argparse.Action):
    """pflag's ``StringSlice``: repeatable, and each value may list several, comma-separated."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        text = values if isinstance(values, str) else ""
        if text:
            items.extend(next(csv.reader([text])))
        setattr(namespace, self.dest, items)


def print_json(value: object, out: TextIO) -> None:
    """desync's ``printJSON`` (``cmd/desync/main.go``): two-space indent, then a newline."""
    out.write(json.dumps(value, indent=2))
    out.write("\n")


def add_chunk_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--chunk-size", type=parse_chunk_sizes,
                        default=DEFAULT_CHUNK_SIZES, help="min:avg:max chunk size in kb")


def _bool_flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true", "yes"):
        return True
    if lowered in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean '{text}'")


def store_options(args: argparse.Namespace) -> StoreOptions:
    return StoreOptions(uncompressed=getattr(args, "uncompressed", False),
                        cache_repair=getattr(args, "cache_repair", True))


def requested_digest(args: argparse.Namespace) -> str | None:
    value: str | None = getattr(args, "digest", None)
    return value


def make_digest(args: argparse.Namespace) -> str:
    return requested_digest(args) or DIGEST_SHA512_256


def load_index(args: argparse.Namespace, location: str) -> Index:
    return read_index(location, requested_digest(args))


def source_store(args: argparse.Namespace, index: Index) -> Store:
    digest: Digest = digest_function(index.digest)
    return open_chain(args.store or [], getattr(args, "cache", None), digest, store_options(args))


def workers(args: argparse.Namespace) -> int:
    n: int = getattr(args, "concurrency", DEFAULT_CONCURRENCY)
    return max(1, min(n, (os.cpu_count() or 1) * 4))


def make_workers(args: argparse.Namespace) -> int:
    """Chunking processes for make: ``-n``, by default one per core."""
    n: int | None = getattr(args, "concurrency", None)
    return max(1, n if n is not None else (os.cpu_count() or 1))


def chunk_sizes(args: argparse.Namespace) -> ChunkSizes:
    sizes: ChunkSizes = args.chunk_size
    return sizes
