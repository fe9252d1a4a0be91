"""Options shared by several commands, named as desync names them (``cmd/desync/options.go``)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from desync_ref.cli.usage import UsageError
from desync_ref.errors import InvalidParameter
from desync_ref.formats.constants import DIGEST_SHA512_256, DIGESTS

# What a command runs with (config, stores, formats) is imported by the functions that use
# it, not here: building the parser of one command stays cheap (tests/test_startup.py).
if TYPE_CHECKING:
    from desync_ref.chunking import ChunkSizes
    from desync_ref.config import Config
    from desync_ref.formats.index import Index
    from desync_ref.stores import Store
    from desync_ref.stores.options import StoreOptions

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
                      default_concurrency: int | None = None) -> None:
    parser.add_argument("-n", "--concurrency", type=int, default=default_concurrency,
                        help="number of concurrent operations")
    parser.add_argument("-r", "--cache-repair", type=_bool_flag, nargs="?", const=True,
                        default=True, help="replace invalid chunks in the cache from source")
    parser.add_argument("-u", "--uncompressed", action="store_true",
                        help="store chunks uncompressed")
    add_remote_options(parser)


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """desync ``addStoreOptions`` for remote stores; unset flags leave the config file's value."""
    parser.add_argument("-t", "--trust-insecure", type=_bool_flag, nargs="?", const=True, default=None,
                        help="trust invalid certificates")
    parser.add_argument("--ca-cert", default=None,
                        help="trust authorities in this file, instead of OS trust store")
    parser.add_argument("--client-cert", default=None,
                        help="path to client certificate for TLS authentication")
    parser.add_argument("--client-key", default=None, help="path to client key for TLS authentication")
    parser.add_argument("-e", "--error-retry", type=int, default=None,
                        help="number of times to retry in case of network error (default 3)")
    parser.add_argument("-b", "--error-retry-base-interval", type=parse_duration, default=None,
                        help="initial retry delay, increases linearly with each attempt (default 500ms)")


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"  # compiled (and cached) by re on use


def parse_duration(text: str) -> float:
    """A Go duration (``500ms``, ``1m30s``) or a plain number of seconds, in seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    while pos < len(text):
        match = re.compile(_DURATION_PART).match(text, pos)
        if match is None:
            raise argparse.ArgumentTypeError(f"invalid duration '{text}'")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text:
        raise argparse.ArgumentTypeError("invalid duration ''")
    return total


class AppendSlice(argparse.Action):
    """pflag's ``StringSlice``: repeatable, and each value may list several, comma-separated."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        text = values if isinstance(values, str) else ""
        if text and not any(ch in text for ch in '"\r\n'):
            items.extend(text.split(","))  # what the csv reader makes of it, without loading csv
        elif text:
            import csv

            items.extend(next(csv.reader([text])))
        setattr(namespace, self.dest, items)


def print_json(value: object, out: TextIO) -> None:
    """desync's ``printJSON`` (``cmd/desync/main.go``): two-space indent, then a newline."""
    import json

    out.write(json.dumps(value, indent=2))
    out.write("\n")


def parse_chunk_sizes(text: str) -> ChunkSizes:
    """desync's ``-m min:avg:max`` in KiB (``cmd/desync/make.go``, ``parseChunkSizeParam``),
    else casync's ``--chunk-size=`` syntax in bytes (``cli/chunk_size.py``); sizes the chunker
    refuses are a usage error of the flag, with the chunker's message."""
    from desync_ref.chunking import ChunkSizes
    from desync_ref.cli.chunk_size import casync_chunk_sizes

    parts = text.split(":")
    try:
        values = [int(p) * 1024 for p in parts] if len(parts) == 3 else None
    except ValueError:
        values = None
    try:
        if values is not None:
            return ChunkSizes(values[0], values[1], values[2])
        sizes = casync_chunk_sizes(text)
    except InvalidParameter as exc:
        raise UsageError(str(exc)) from None
    if isinstance(sizes, str):
        raise UsageError(f"invalid chunk size '{text}': {sizes}")
    return sizes


def add_chunk_size_option(parser: argparse.ArgumentParser) -> None:
    from desync_ref.chunking import DEFAULT_CHUNK_SIZES

    parser.add_argument("-m", "--chunk-size", type=parse_chunk_sizes,
                        default=DEFAULT_CHUNK_SIZES,
                        help="min:avg:max chunk size in kb, or casync's AVG or MIN:AVG:MAX "
                        "in bytes with K/M/G suffixes (64K, 16K:64K:256K)")


def _bool_flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true", "yes"):
        return True
    if lowered in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean '{text}'")


def command_config(args: argparse.Namespace) -> Config:
    """The config file of this run (``--config`` or desync's default path), loaded once."""
    config: Config | None = getattr(args, "loaded_config", None)
    if config is None:
        from desync_ref.config import load_config

        config = load_config(getattr(args, "config", None))
        args.loaded_config = config
    return config


def _flags_over(options: StoreOptions, args: argparse.Namespace) -> StoreOptions:
    """desync ``cmdStoreOptions.MergedWith``: flags given on the command line win."""
    from dataclasses import replace

    changes: dict[str, Any] = {"cache_repair": getattr(args, "cache_repair", True)}
    n = getattr(args, "concurrency", None)
    changes["n"] = n if n is not None else DEFAULT_CONCURRENCY
    if getattr(args, "uncompressed", False):
        changes["uncompressed"] = True
    for flag in ("trust_insecure", "ca_cert", "client_cert", "client_key", "error_retry",
                 "error_retry_base_interval"):
        value = getattr(args, flag, None)
        if value is not None:
            changes[flag] = value
    return replace(options, **changes)


def store_options(args: argparse.Namespace) -> StoreOptions:
    from dataclasses import replace

    from desync_ref.config import apply_entry
    from desync_ref.stores.options import StoreOptions

    if (getattr(args, "client_cert", None) is None) != (getattr(args, "client_key", None) is None):
        raise UsageError("--client-key and --client-cert options need to be provided together")
    config = command_config(args)
    # The credential sections reach every backend; each picks its own entry.
    credentials = StoreOptions(s3_credentials=config.s3_credentials, oci_credentials=config.oci_credentials)
    base = _flags_over(credentials, args)
    if not config.store_options:
        return base

    def per_location(location: str) -> StoreOptions:
        return _flags_over(apply_entry(credentials, config.options_for(location)), args)

    return replace(base, per_location=per_location)


def requested_digest(args: argparse.Namespace) -> str | None:
    value: str | None = getattr(args, "digest", None)
    return value


def make_digest(args: argparse.Namespace) -> str:
    return requested_digest(args) or DIGEST_SHA512_256


def load_index(args: argparse.Namespace, location: str) -> Index:
    from desync_ref.operations.files import read_index

    return read_index(location, requested_digest(args), store_options(args))


def source_store(args: argparse.Namespace, index: Index) -> Store:
    if not args.store:
        raise UsageError("no store given (use -s)")
    from desync_ref.formats.chunk import digest_function
    from desync_ref.stores.location import open_chain

    digest = digest_function(index.digest)
    return open_chain(args.store or [], getattr(args, "cache", None), digest, store_options(args))


def workers(args: argparse.Namespace) -> int:
    """Threads for chunk-by-chunk work: ``-n``, by default desync's 10 where a store is remote.

    Local stores leave nothing to wait for but CPU: more threads than cores only fight over
    the GIL (measured: extract of 512 MiB took 1.2 s with 2-3 threads, 1.4-1.7 s with 8).
    """
    n: int | None = getattr(args, "concurrency", None)
    cores = os.cpu_count() or 1
    if n is None:
        from desync_ref.stores.registry import backend_for

        stores = getattr(args, "store", None) or []
        locations = [*([stores] if isinstance(stores, str) else stores), getattr(args, "cache", None) or ""]
        remote = any("|" in loc or (bool(loc) and backend_for(loc).remote) for loc in locations)
        n = DEFAULT_CONCURRENCY if remote else cores + 1
    return max(1, min(n, cores * 4))


def make_workers(args: argparse.Namespace) -> int:
    """Chunking processes for make: ``-n``, by default one per core."""
    n: int | None = getattr(args, "concurrency", None)
    return max(1, n if n is not None else (os.cpu_count() or 1))


def chunk_sizes(args: argparse.Namespace) -> ChunkSizes:
    sizes: ChunkSizes = args.chunk_size
    return sizes
