"""What ``diff`` was given: an index or a catar archive, told apart by the first record.

Spec: ``spec/diff.md`` § "Inputs". An index starts with the 48-byte INDEX header, a catar
with the 64-byte ENTRY record of its root (casync ``src/caformat.h``); anything else is
refused. Locations that are not local files (index store URLs) are taken for indexes.
"""

from __future__ import annotations

import os
import struct
from typing import Final, Literal

from desync_ref.errors import DesyncRefError, InvalidFormat
from desync_ref.formats.constants import CA_FORMAT_ENTRY, CA_FORMAT_INDEX, CA_FORMAT_WITH_MASK
from desync_ref.formats.index import INDEX_HEADER_SIZE, Index

Kind = Literal["index", "catar"]
_HEAD: Final = struct.Struct("<2Q")
_ENTRY_SIZE: Final = 64


def sniff(location: str) -> Kind:
    """``index`` or ``catar`` from the first record of a local file; other locations
    (``http(s)://`` index stores) are indexes."""
    if "://" in location and not os.path.exists(location):
        return "index"
    try:
        with open(location, "rb") as f:
            head = f.read(_HEAD.size)
    except OSError as exc:
        raise DesyncRefError(f"cannot read {location}: {exc.strerror}") from None
    if len(head) == _HEAD.size:
        size, kind = _HEAD.unpack(head)
        if (size, kind) == (INDEX_HEADER_SIZE, CA_FORMAT_INDEX):
            return "index"
        if (size, kind) == (_ENTRY_SIZE, CA_FORMAT_ENTRY):
            return "catar"
    raise InvalidFormat(f"{location}: neither a casync index nor a catar archive")


def is_archive_index(index: Index) -> bool:
    """A caidx: its flags name what the archive keeps (a blob index has none of those)."""
    return bool(index.feature_flags & CA_FORMAT_WITH_MASK)
