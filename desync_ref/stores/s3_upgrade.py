"""Converting an S3 chunk store from the flat layout of desync before April 2018 (objects
named ``<prefix><id>``) to the nested one every store uses now (``<prefix><xxxx>/<id>.cacnk``).

Spec: ``spec/s3.md`` (appended section "upgrade-s3"). After desync's ``S3Store.Upgrade``
(``s3.go``, removed from desync in 2018 with its ``upgrade-s3`` command,
``cmd/desync/upgrade-s3.go``): list the objects directly under the prefix (not below it),
skip every name that is not a bare chunk id, copy each chunk object to its nested name,
then delete the flat one. The flat objects are the compressed form (``.cacnk``: desync had
no uncompressed stores then), so the bytes are copied unchanged, server side.

Safe to interrupt and to run again: an object is deleted only once its copy exists, so a run
cut short leaves every chunk under one name or both; a rerun copies what is still flat
(overwriting an earlier copy with the same bytes) and deletes it. A store already nested has
nothing flat, and a rerun changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from desync_ref.formats.chunk import COMPRESSED_CHUNK_SUFFIX, chunk_file_name, is_id_hex
from desync_ref.stores.s3 import S3Store


@dataclass
class UpgradeReport:
    """What a run did: the flat keys moved (old key, new key) and the keys left alone."""

    moved: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


def _flat_keys(store: S3Store) -> Iterator[str]:
    """Keys directly under the store's prefix (ListObjectsV2 with the ``/`` delimiter, as
    desync's non-recursive listing), one page at a time."""
    token: str | None = None
    while True:
        params: dict[str, Any] = {"Prefix": store.prefix, "Delimiter": "/"}
        if token:
            params["ContinuationToken"] = token
        page = store.retrying("LIST", lambda p=params: store.call("list_objects_v2", **p))  # type: ignore[misc]
        for entry in page.get("Contents", ()):
            yield str(entry["Key"])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def upgrade_flat_layout(store: S3Store, *,
                        on_move: Callable[[str, str], None] | None = None) -> UpgradeReport:
    """Move every flat chunk object of ``store`` to its nested name; ``on_move(old, new)``
    after each move."""
    report = UpgradeReport()
    for key in _flat_keys(store):
        name = key[len(store.prefix):]
        if not is_id_hex(name):  # already nested, or not a chunk: left alone
            report.skipped += 1
            continue
        new = store.prefix + chunk_file_name(bytes.fromhex(name), COMPRESSED_CHUNK_SUFFIX)
        source = {"Bucket": store.bucket, "Key": key}
        store.retrying(f"COPY {key} to", lambda k=new, s=source: store.call(  # type: ignore[misc]
            "copy_object", Key=k, CopySource=s))
        # Deleted only once the copy exists: an interrupted run loses nothing.
        store.retrying(f"DELETE {key} from", lambda k=key: store.call("delete_object", Key=k))  # type: ignore[misc]
        report.moved.append((key, new))
        if on_move is not None:
            on_move(key, new)
    return report
