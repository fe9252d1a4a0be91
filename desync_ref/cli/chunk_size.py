"""casync's ``--chunk-size=`` syntax, accepted by ``-m``/``--chunk-size`` beside desync's.

Spec: ``spec/cli.md`` § "Chunk sizes". casync ``src/casync-tool.c`` (``parse_chunk_sizes``)
takes ``auto``, one average size, or ``MIN:AVG:MAX``, each in bytes as systemd's
``parse_size`` (``src/parse-util.c``) reads them: ``64K``, ``1.5M``, ``1M512K``, ``100B``,
suffixes K M G T P E in powers of 1024. One value sets the average; casync's chunker then
takes ``avg/4`` and ``4*avg`` (at least 1, at most 128 MiB) for the bounds
(``ca_chunker_set_size``, ``src/cachunker.c``).

desync's ``-m`` is three plain numbers in KiB (``16:64:256``). Where a value could be read
both ways, three plain numbers, it keeps desync's meaning, so no command line changes what
it does; every other value is casync's.
"""

from __future__ import annotations

import re
from typing import Final

from desync_ref.chunking import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_ref.formats.constants import (
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_CHUNK_SIZE_LIMIT_MIN,
    CA_CHUNKER_WINDOW_SIZE,
)

# parse_size's table, largest first; the empty suffix (bytes) ends it.
_SUFFIXES: Final = (("E", 1024**6), ("P", 1024**5), ("T", 1024**4), ("G", 1024**3),
                    ("M", 1024**2), ("K", 1024), ("B", 1), ("", 1))
_UINT64_MAX: Final = 2**64 - 1
_WHITESPACE: Final = " \t"
# strtoull: optional white space (isspace) and sign, then decimal digits.
_NUMBER: Final = re.compile(r"[ \t\n\v\f\r]*\+?([0-9]+)")
_DIGITS: Final = re.compile(r"[0-9]+")


def parse_size(text: str) -> int | None:
    """systemd's ``parse_size``: a sum of ``NUMBER[.FRACTION] SUFFIX`` terms with suffixes in
    falling order (``1M512K``); None where it fails (EINVAL, ERANGE)."""
    pos, total, first_suffix = 0, 0, 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if text.startswith("-", pos):
            return None
        number = _NUMBER.match(text, pos)
        if number is None:
            return None
        whole, pos = int(number.group(1)), number.end()
        if whole > _UINT64_MAX:
            return None
        frac = 0.0
        if text.startswith(".", pos):
            pos += 1
            digits = _DIGITS.match(text, pos)
            if digits is not None:
                if int(digits.group()) > _UINT64_MAX:
                    return None
                # Computed as parse_size does in C doubles, so "0.3K" rounds as in casync.
                frac = float(int(digits.group()))
                for _ in digits.group():
                    frac /= 10
                pos = digits.end()
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        for index in range(first_suffix, len(_SUFFIXES)):
            suffix, factor = _SUFFIXES[index]
            if text.startswith(suffix, pos):
                break
        else:
            return None  # a second term in bytes ("1 2"), or suffixes out of order
        if whole + (frac > 0) > _UINT64_MAX // factor:
            return None
        total += whole * factor + int(frac * factor)
        if total > _UINT64_MAX:
            return None
        pos += len(suffix)
        first_suffix = index + 1
        if pos >= len(text):
            return total


def casync_chunk_sizes(text: str) -> ChunkSizes | str:
    """casync ``parse_chunk_sizes`` and what its chunker derives; a message where casync
    refuses the value."""
    if text == "auto":
        return DEFAULT_CHUNK_SIZES
    parts = text.split(":", 2)
    if len(parts) == 2:
        return "a single average chunk size or a triplet of minimum, average and maximum is needed"
    names = ("minimum", "average", "maximum") if len(parts) == 3 else ("average",)
    values = []
    for name, part in zip(names, parts, strict=True):
        value = parse_size(part)
        if value is None:
            return f"can't parse {name} chunk size"
        values.append(value)
    if len(values) == 1:
        (avg,) = values
        if not CA_CHUNK_SIZE_LIMIT_MIN <= avg <= CA_CHUNK_SIZE_LIMIT_MAX:
            return f"average chunk size must be in {CA_CHUNK_SIZE_LIMIT_MIN}..{CA_CHUNK_SIZE_LIMIT_MAX}"
        values = [max(avg // 4, CA_CHUNK_SIZE_LIMIT_MIN), avg,
                  min(avg * 4, CA_CHUNK_SIZE_LIMIT_MAX)]
    sizes = ChunkSizes(*values)
    if not sizes.fixed and sizes.max < CA_CHUNKER_WINDOW_SIZE:
        # The chunker cuts no chunk shorter than its window, so chunks would outgrow max:
        # casync's index writer then fails ("Invalid argument", ca_index_write_chunk).
        return f"maximum chunk size must be >= {CA_CHUNKER_WINDOW_SIZE} (the chunker's window)"
    return sizes
