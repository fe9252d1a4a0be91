"""``desync-ref dump``: a file's records with offsets, sizes, decoded fields and the spec
section of each, as text or as one JSON document (schema: ``spec/dump.md``).

The records come from ``desync_ref.audit.dump_formats`` (the library's parsers in their
tolerant modes); this module decodes field values for people (flags as names, modes as
``drwxr-xr-x``, times as UTC with nanoseconds, ids as hex), cuts a dissection to a byte
range, lays a caidx's catar stream over its chunks, and renders.
"""

from __future__ import annotations

import bisect
import datetime
import stat
from collections.abc import Callable
from typing import Any, Final

from desync_ref.audit.dump_formats import (
    CACNK,
    CAIBX,
    CAIDX,
    CATAR,
    CATAR_NAMES,
    PROTOCOL,
    PROTOCOL_FLAGS,
    Dissection,
    dissect_catar,
    dissect_chunk,
    dissect_index,
    dissect_protocol,
    index_chunks,
)
from desync_ref.errors import ChunkInvalid, ChunkMissing
from desync_ref.formats import casync_protocol as proto
from desync_ref.formats.constants import (
    CA_FORMAT_GOODBYE_TAIL_MARKER,
    CA_FORMAT_INDEX,
    CA_FORMAT_TABLE,
    CA_FORMAT_TABLE_TAIL_MARKER,
    FEATURE_FLAG_NAMES,
    UINT64_MAX,
)
from desync_ref.formats.encryption import ChunkCipher
from desync_ref.formats.records import (
    BYTES,
    FLAGS,
    ID,
    MAGIC,
    MODE,
    TEXT,
    TIME,
    Damage,
    Field,
)

SCHEMA: Final = "desync-ref-dump/1"  # JSON "schema" value; a change of layout bumps it

# Single feature bits by name (casync's --with names); the composites are left out.
_FLAG_BITS: Final = sorted((bit, name) for name, bit in FEATURE_FLAG_NAMES.items() if bit & (bit - 1) == 0)
_FLAG_BITS_EXTRA: Final = [(0x1000000000000000, "exclude-file"), (0x2000000000000000, "sha512-256"),
                           (0x4000000000000000, "exclude-submounts"), (0x8000000000000000, "exclude-nodump")]
_PROTOCOL_BITS: Final = [(getattr(proto, n), n.lower().replace("_", "-")) for n in (
    "READABLE_STORE", "WRITABLE_STORE", "READABLE_INDEX", "WRITABLE_INDEX", "READABLE_ARCHIVE",
    "WRITABLE_ARCHIVE", "PULL_CHUNKS", "PULL_INDEX", "PULL_ARCHIVE", "PUSH_CHUNKS", "PUSH_INDEX",
    "PUSH_INDEX_CHUNKS", "PUSH_ARCHIVE")]
_MAGICS: Final = {**{k: f"CA_FORMAT_{v}" for k, v in CATAR_NAMES.items()},
                  CA_FORMAT_GOODBYE_TAIL_MARKER: "CA_FORMAT_GOODBYE_TAIL_MARKER",
                  CA_FORMAT_INDEX: "CA_FORMAT_INDEX", CA_FORMAT_TABLE: "CA_FORMAT_TABLE",
                  CA_FORMAT_TABLE_TAIL_MARKER: "CA_FORMAT_TABLE_TAIL_MARKER", UINT64_MAX: "UINT64_MAX",
                  0xFD2FB528: "zstd frame magic",
                  **{k: f"CA_PROTOCOL_{v}" for k, v in proto.TYPE_NAMES.items()}}

# The spec section that defines each record (checked against spec/*.md by the tests).
_SPEC: Final = {
    "INDEX": "spec/index.md#index-object", "TABLE": "spec/index.md#table-object",
    "TABLE_ITEM": "spec/index.md#table-object", "TABLE_TAIL": "spec/index.md#tail",
    "ENTRY": "spec/catar.md#entry", "GOODBYE": "spec/catar.md#goodbye",
    "ZSTD_FRAME_HEADER": "spec/store.md#compressed-chunks", "ZSTD_BLOCK": "spec/store.md#compressed-chunks",
    "ZSTD_CHECKSUM": "spec/store.md#compressed-chunks", "DATA": "spec/store.md#uncompressed-chunks",
    "NONCE": "spec/store.md#chunk-encryption", "CIPHERTEXT": "spec/store.md#chunk-encryption",
    "TAG": "spec/store.md#chunk-encryption", "HELLO": "spec/protocol.md#hello-feature-flags",
}
_SPEC_BY_TYPE: Final = {CATAR: "spec/catar.md#records", PROTOCOL: "spec/protocol.md#messages",
                        CAIBX: "spec/index.md#layout", CAIDX: "spec/index.md#layout",
                        CACNK: "spec/store.md#compressed-chunks"}
SPEC_ANCHORS: Final = frozenset([*_SPEC.values(), *_SPEC_BY_TYPE.values()])


def spec_section(kind: str, record_type: str) -> str:
    return _SPEC.get(record_type) or _SPEC_BY_TYPE[kind]


# --- field values for people -------------------------------------------------------------------

def _bit_names(value: int, bits: list[tuple[int, str]]) -> str:
    names = [name for bit, name in bits if value & bit]
    rest = value & ~sum(bit for bit, _ in bits)
    if rest:
        names.append(f"unknown 0x{rest:x}")
    return "|".join(names) or "none"


def _mode(value: int) -> str:
    if value >> 32:
        return f"0o{value:o} (not a mode)"
    return f"{stat.filemode(value)} (0o{value:o})"


def _time(ns: int) -> str:
    ns = ns - (1 << 64) if ns >= 1 << 63 else ns  # stored as u64, read signed (spec/catar.md)
    seconds, frac = divmod(ns, 1_000_000_000)
    try:
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns (out of range)"
    return f"{when:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def _text(value: bytes) -> str:
    return '"' + value.decode("utf-8", "backslashreplace").replace('"', '\\"') + '"'


def decode_field(f: Field) -> str:
    """A field's value as a person reads it."""
    v = f.value
    if isinstance(v, bytes):
        if f.kind == TEXT:
            return _text(v)
        if f.kind == ID:
            return v.hex()
        more = f" ... ({f.size} bytes)" if f.size > len(v) else ""
        return (v.hex() or "(empty)") + more
    if isinstance(v, int) and f.kind == BYTES:
        return f"({v} bytes)"
    if f.kind == FLAGS:
        return f"0x{v:016x} ({_bit_names(v, _FLAG_BITS + _FLAG_BITS_EXTRA)})"
    if f.kind == PROTOCOL_FLAGS:
        return f"0x{v:x} ({_bit_names(v, _PROTOCOL_BITS)})"
    if f.kind == MODE:
        return _mode(v)
    if f.kind == TIME:
        return _time(v)
    if f.kind == MAGIC:
        name = _MAGICS.get(v)
        return f"0x{v:x} ({name})" if name else f"0x{v:x}"
    if f.name == "block_type":
        return f"{v} ({('raw', 'rle', 'compressed', 'reserved')[v & 3]})"
    return str(v)


# --- building a dissection ---------------------------------------------------------------------

def dissect(data: bytes, kind: str, name: str = "", cipher: ChunkCipher | None = None,
            digest: str = "sha512-256") -> Dissection:
    if kind in (CAIBX, CAIDX):
        return dissect_index(data, kind)
    if kind == CATAR:
        return dissect_catar(data)
    if kind == CACNK:
        return dissect_chunk(data, name, cipher, digest)
    return dissect_protocol(data)


ChunkReader = Callable[[bytes, int], bytes]


def add_stream(index: Dissection, read_chunk: ChunkReader) -> None:
    """The catar stream a caidx's chunks make up, dissected, each record with its chunks.
    ``read_chunk(id, size)`` returns the chunk's data (ChunkMissing/ChunkInvalid if not)."""
    chunks = index_chunks(index)
    parts: list[bytes] = []
    trouble: Damage | None = None
    for n, (start, size, chunk_id) in enumerate(chunks):
        try:
            parts.append(read_chunk(chunk_id, size))
        except (ChunkMissing, ChunkInvalid) as exc:
            trouble = Damage(start, f"table item {n}: {exc}", f"chunk {chunk_id.hex()}", str(exc))
            break
    stream = dissect_catar(b"".join(parts))
    if trouble is not None:
        stream.damage.insert(0, trouble)
    starts = [c[0] for c in chunks]
    for i, r in enumerate(stream.records):
        first = max(0, bisect.bisect_right(starts, r.offset) - 1)
        last = max(first, bisect.bisect_left(starts, r.offset + max(r.size, 1)) - 1)
        stream.chunks[i] = [(n, chunks[n][2]) for n in range(first, min(last, len(chunks) - 1) + 1)]
    index.stream = stream


def parse_range(text: str) -> tuple[int, int] | None:
    """``OFFSET:LEN`` (decimal or 0x hex) as numbers; None when it does not parse."""
    first, sep, second = text.partition(":")
    try:
        offset, length = int(first, 0), int(second, 0)
    except ValueError:
        return None
    return (offset, length) if sep and offset >= 0 and length > 0 else None


def limit_to(d: Dissection, offset: int, length: int) -> None:
    """Keep the records that overlap ``[offset, offset + length)`` (of the file, or of the
    stream for a caidx read with its store)."""
    target = d.stream if d.stream is not None else d
    end = offset + length
    keep = [i for i, r in enumerate(target.records) if r.offset < end and offset < r.offset + max(r.size, 1)]
    target.chunks = {n: target.chunks[i] for n, i in enumerate(keep) if i in target.chunks}
    target.records = [target.records[i] for i in keep]


# --- rendering ---------------------------------------------------------------------------------

def _damage_line(d: Damage) -> str:
    parts = [f"expected {d.expected}"] if d.expected else []
    if d.found:
        parts.append(f"found {d.found}")
    extra = f" ({', '.join(parts)})" if parts else ""
    return f"DAMAGE at {d.offset}: {d.message}{extra}"


def text_lines(d: Dissection, name: str, indent: str = "") -> list[str]:
    state = "valid" if d.valid else "INVALID"
    lines = [f"{indent}{name}: {d.type}, {d.size} bytes, {state}"]
    lines += [f"{indent}  {k}: {v}" for k, v in d.facts.items()]
    for i, r in enumerate(d.records):
        lines.append(f"{indent}{r.offset:>10} {r.size:>8}  {r.type}  [{spec_section(d.type, r.type)}]")
        if i in d.chunks:
            lines.append(f"{indent}{'':>21}  in chunk "
                         + ", ".join(f"{n} {cid.hex()}" for n, cid in d.chunks[i]))
        for f in r.fields:
            lines.append(f"{indent}{f.offset:>10} {f.size:>8}    {f.name} = {decode_field(f)}")
    lines += [indent + _damage_line(x) for x in d.damage]
    if d.stream is not None:
        what = "catar stream" if d.stream.type == CATAR else "plain text"
        lines += text_lines(d.stream, what, indent + "  ")
    return lines


def _json_value(f: Field) -> Any:
    v = f.value
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace") if f.kind == TEXT else v.hex()
    return v


def to_json(d: Dissection, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if name is not None:
        out["schema"] = SCHEMA
        out["file"] = name
    out.update({"type": d.type, "size": d.size, "valid": d.valid, "facts": dict(d.facts), "records": []})
    for i, r in enumerate(d.records):
        rec: dict[str, Any] = {"offset": r.offset, "size": r.size, "type": r.type,
                               "spec": spec_section(d.type, r.type),
                               "fields": [{"name": f.name, "offset": f.offset, "size": f.size,
                                           "kind": f.kind, "value": _json_value(f),
                                           "decoded": decode_field(f)} for f in r.fields]}
        if i in d.chunks:
            rec["chunks"] = [{"index": n, "id": cid.hex()} for n, cid in d.chunks[i]]
        out["records"].append(rec)
    out["damage"] = [{"offset": x.offset, "message": x.message, "expected": x.expected or None,
                      "found": x.found or None} for x in d.damage]
    out["stream"] = to_json(d.stream) if d.stream is not None else None
    return out
