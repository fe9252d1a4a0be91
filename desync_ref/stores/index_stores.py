"""Index stores by location: a directory or an HTTP(S) base URL holding ``<name>.caibx`` files.

Spec: ``spec/http.md``. After desync ``localindex.go`` (``validIndexName``: no empty name,
``.``, ``..`` or path separators) and ``indexStoreFromLocation`` in
``cmd/desync/store.go``: an index location is split into its store (the directory or the
URL up to the last ``/``) and the index name (the last element). The backend comes from the
scheme registry (``stores/registry.py``).
"""

from __future__ import annotations

from typing import Final

from desync_ref.errors import InvalidParameter
from desync_ref.stores import IndexStore
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.registry import LOCAL, index_backend_for

# The largest index read from or taken by an HTTP peer. An index is 40 bytes per chunk:
# 256 MiB is 6.7 million chunks, some 400 GiB of data at the default 64 KiB average chunk.
MAX_INDEX_BYTES: Final = 256 * 1024 * 1024


def valid_index_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def is_index_url(location: str) -> bool:
    """A location an index backend other than the local file system serves."""
    return index_backend_for(location) is not LOCAL


def refuse_encryption(location: str, options: StoreOptions, *, index_file: bool = True) -> None:
    """Indexes are never encrypted: encryption options for an index location are an error,
    not silently ignored (desync ``ValidateIndexOptions``, checked in
    ``indexStoreFromLocation`` for every backend). For an index file the options are those
    of its directory, the location up to the last ``/`` (desync's ``base``)."""
    base = location.rpartition("/")[0] if index_file else location
    picked = options.for_location(base)
    if picked.encryption or picked.encryption_key or picked.encryption_algorithm:
        raise InvalidParameter(f"store options for \"{redact(location)}\": encryption is not supported "
                               "by index stores", parameter="encryption")


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS) -> IndexStore:
    """An index store from its location (a directory or an http(s) base URL)."""
    refuse_encryption(location, options, index_file=False)
    return index_backend_for(location).load().open_index_store(location, options)


def index_store_for(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                    create: bool = False) -> tuple[IndexStore, str]:
    """The store holding the index at ``location`` and the index's name in it."""
    refuse_encryption(location, options)
    return index_backend_for(location).load().open_index_location(location, options, create=create)
