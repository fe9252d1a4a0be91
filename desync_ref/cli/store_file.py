"""``--store-file``: the JSON file naming the stores and cache of a long-running command
(chunk-server, mount-index), read again on SIGHUP.

Spec: spec/http.md (chunk-server), spec/mount.md (signals). After desync
``cmd/desync/storefile.go`` (``readStoreFile``: ``{"stores": [...], "cache": "..."}``) and the
SIGHUP handlers of ``chunkserver.go`` and ``mount-index.go``, which keep the stores in use
when the new file cannot be used.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from typing import Final

from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError, StoreError
from desync_ref.stores import Store
from desync_ref.stores.swap import SwapStore

# Requests still running on a replaced chain get this long before it is closed.
OLD_STORE_GRACE: Final = 30.0


def read_store_file(path: str) -> tuple[list[str], str]:
    """The store locations and the cache location the file names."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise StoreError(f"failed to read store-file '{path}': {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"failed to read store-file '{path}': {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise StoreError(f"failed to read store-file '{path}': expected a JSON object")
    stores, cache = data.get("stores") or [], data.get("cache") or ""
    if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores) or not isinstance(cache, str):
        raise StoreError(f"failed to read store-file '{path}': \"stores\" must be a list of strings, "
                         "\"cache\" a string")
    unknown = set(data) - {"stores", "cache"}
    if unknown:
        raise StoreError(f"failed to read store-file '{path}': unknown key \"{sorted(unknown)[0]}\"")
    return stores, cache


def store_locations(args: argparse.Namespace) -> tuple[list[str], str]:
    """(stores, cache) from ``-s``/``-c`` or from ``--store-file``, never both."""
    stores: list[str] = list(args.store)
    cache: str = args.cache
    if args.store_file:
        if stores:
            raise UsageError("--store and --store-file can't be used together")
        if cache:
            raise UsageError("--cache and --store-file can't be used together")
        stores, cache = read_store_file(args.store_file)
    if not stores:
        raise UsageError("no store provided")
    return stores, cache


def reload_stores(swap: SwapStore, build: Callable[[], Store], say: Callable[[str], None], path: str) -> None:
    """SIGHUP: the chain ``build`` makes from the store file replaces the one in ``swap``;
    one that cannot be built or swapped in keeps the old chain, with a message."""
    try:
        new = build()
    except (DesyncRefError, UsageError, OSError) as exc:
        say(f"failed to reload configuration: {exc}")
        return
    try:
        old = swap.swap(new)
    except DesyncRefError as exc:
        new.close()
        say(f"failed to reload configuration: {exc}")
        return
    timer = threading.Timer(OLD_STORE_GRACE, old.close)
    timer.daemon = True
    timer.start()
    say(f"reloaded stores from {path}: {new}")
