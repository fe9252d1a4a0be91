"""Sets of chunk ids: the ids of indexes, and text files of ids (``--ignore-chunks``).

Spec: ``spec/index.md`` (chunk ids), ``spec/store.md``. The text format, one hex id per line
with blank lines skipped and surrounding spaces trimmed, is desync's ``readChunkIDFile``
(``cmd/desync/chop.go``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from desync_ref.errors import DesyncRefError, InvalidFormat, InvalidParameter
from desync_ref.formats.chunk import parse_id
from desync_ref.formats.index import Index


def read_chunk_id_file(location: str) -> list[bytes]:
    try:
        text = Path(location).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DesyncRefError(f"cannot read chunk id file {location}: {exc.strerror}") from None
    ids: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(parse_id(line))
        except InvalidParameter:
            raise InvalidFormat(f"{location} line {number}: invalid chunk id '{line}'") from None
    return ids


def unique_ids(indexes: Iterable[Index]) -> dict[bytes, str]:
    """Every chunk id of the indexes, once, in first-seen order, with its index's digest."""
    ids: dict[bytes, str] = {}
    for index in indexes:
        digest = index.digest
        for chunk in index.chunks:
            ids.setdefault(chunk.id, digest)
    return ids


def exclude(ids: dict[bytes, str], ignore: Iterable[bytes]) -> dict[bytes, str]:
    drop = set(ignore)
    return {chunk_id: digest for chunk_id, digest in ids.items() if chunk_id not in drop}
