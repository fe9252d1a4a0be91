"""The dissectors behind ``desync-ref dump``: each format's records and damage, read by the
library's own parsers in their tolerant modes.

Spec: ``spec/dump.md``. The index through ``formats/index.py`` ``scan_index``; catar through
the validating decoder (``formats/catar_decoder.py``) with its ``on_record`` observer; a
chunk through ``formats/chunk.py`` ``decompress`` (zstd frame layout: RFC 8878 § 3.1.1) and
``formats/encryption.py``; a protocol capture through ``formats/casync_protocol.py``
``decode_frame`` (frame layout: casync ``src/caprotocol.h``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from desync_ref.errors import ChunkInvalid, InvalidFormat, ProtocolError
from desync_ref.formats import casync_protocol as proto
from desync_ref.formats.catar_decoder import CatarDecoder, EndOfArchive, EntryEvent, NeedData
from desync_ref.formats.chunk import ZSTD_MAGIC, decompress, digest_function
from desync_ref.formats.constants import (
    CA_FORMAT_ACL_DEFAULT,
    CA_FORMAT_ACL_DEFAULT_GROUP,
    CA_FORMAT_ACL_DEFAULT_USER,
    CA_FORMAT_ACL_GROUP,
    CA_FORMAT_ACL_GROUP_OBJ,
    CA_FORMAT_ACL_USER,
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_XATTR,
)
from desync_ref.formats.encryption import ALGORITHMS, TAG_SIZE, ChunkCipher
from desync_ref.formats.index import scan_index
from desync_ref.formats.records import (
    BYTES,
    FLAGS,
    ID,
    MAGIC,
    MODE,
    TEXT,
    TIME,
    U64,
    Damage,
    Field,
    Record,
    u64_fields,
)

# What a dissection can be; the names are the JSON "type" values (spec/dump.md).
CAIBX, CAIDX, CATAR, CACNK, PROTOCOL = "caibx", "caidx", "catar", "cacnk", "casync-protocol"
TYPES = (CAIBX, CAIDX, CATAR, CACNK, PROTOCOL)
PROTOCOL_FLAGS = "protocol-flags"  # a field kind of this module's own: HELLO's feature bits

CATAR_NAMES = {
    CA_FORMAT_ENTRY: "ENTRY", CA_FORMAT_USER: "USER", CA_FORMAT_GROUP: "GROUP",
    CA_FORMAT_XATTR: "XATTR", CA_FORMAT_ACL_USER: "ACL_USER", CA_FORMAT_ACL_GROUP: "ACL_GROUP",
    CA_FORMAT_ACL_GROUP_OBJ: "ACL_GROUP_OBJ", CA_FORMAT_ACL_DEFAULT: "ACL_DEFAULT",
    CA_FORMAT_ACL_DEFAULT_USER: "ACL_DEFAULT_USER", CA_FORMAT_ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    CA_FORMAT_FCAPS: "FCAPS", CA_FORMAT_QUOTA_PROJID: "QUOTA_PROJID", CA_FORMAT_SELINUX: "SELINUX",
    CA_FORMAT_SYMLINK: "SYMLINK", CA_FORMAT_DEVICE: "DEVICE", CA_FORMAT_PAYLOAD: "PAYLOAD",
    CA_FORMAT_FILENAME: "FILENAME", CA_FORMAT_GOODBYE: "GOODBYE",
}
PREVIEW = 32  # bytes of an opaque field (payload, chunk data) a record carries


@dataclass(slots=True)
class Dissection:
    """What ``dump`` found in one file (or in the stream a caidx's chunks make up, or in an
    encrypted chunk's plain text): records in order, damage, and facts about the whole."""

    type: str
    size: int
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    facts: dict[str, str | int] = field(default_factory=dict)
    # For a stream made of chunks: each record's chunks, as (index in the table, id).
    chunks: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    stream: Dissection | None = None

    @property
    def valid(self) -> bool:
        return not self.damage and (self.stream is None or self.stream.valid)

    def take(self, items: Iterable[Record | Damage]) -> None:
        for item in items:
            if isinstance(item, Damage):
                self.damage.append(item)
            else:
                self.records.append(item)


# --- type detection ----------------------------------------------------------------------------

def detect_type(name: str, data: bytes) -> str | None:
    """The format by the file's name, else by its first bytes; None if neither says."""
    for suffix, kind in ((".caibx", CAIBX), (".caidx", CAIDX), (".catar", CATAR)):
        if name.endswith(suffix):
            return kind
    if ".cacnk" in name.rsplit("/", 1)[-1] or encrypted_name(name):
        return CACNK
    if len(data) >= 16:
        magic = int.from_bytes(data[8:16], "little")
        if magic == 0x96824D9C7B129FF9:  # CA_FORMAT_INDEX: which of the two the flags can't say
            return CAIBX
        if magic == CA_FORMAT_ENTRY:
            return CATAR
        if magic == proto.HELLO:
            return PROTOCOL
    if data.startswith(ZSTD_MAGIC):
        return CACNK
    return None


def encrypted_name(name: str) -> str | None:
    """The algorithm an encrypted chunk's name extension names (``.<algorithm>-<key id>``,
    ``formats/encryption.py`` ``key_extension``), or None."""
    base = name.rsplit("/", 1)[-1]
    for algorithm in ALGORITHMS:
        if f".{algorithm}-" in base:
            return algorithm
    return None


# --- index -------------------------------------------------------------------------------------

def dissect_index(data: bytes, kind: str = CAIBX) -> Dissection:
    out = Dissection(kind, len(data))
    out.take(scan_index(data))
    items = [r for r in out.records if r.type == "TABLE_ITEM"]
    out.facts["chunks"] = len(items)
    out.facts["blob_size"] = int(items[-1].fields[0].value) if items else 0
    return out


def index_chunks(d: Dissection) -> list[tuple[int, int, bytes]]:
    """(start, size, id) of every table item a dissection of an index found."""
    return [(int(r.fields[1].value), int(r.fields[2].value), bytes(r.fields[3].value))
            for r in d.records if r.type == "TABLE_ITEM"]


# --- catar -------------------------------------------------------------------------------------

def _cstr(name: str, at: int, body: bytes) -> Field:
    return Field(name, at, len(body), body.rstrip(b"\0"), TEXT)


def catar_fields(offset: int, size: int, kind: int, body: bytes, data: bytes) -> tuple[Field, ...]:
    """A catar record's fields: the header's two, then the body's per its type (layouts:
    casync ``src/caformat.h``)."""
    head = u64_fields(data, offset, ("size", "type"), {"type": MAGIC})
    at = offset + 16
    if kind == CA_FORMAT_ENTRY:
        return head + u64_fields(data, at, ("feature_flags", "mode", "flags", "uid", "gid", "mtime"),
                                 {"feature_flags": FLAGS, "mode": MODE, "mtime": TIME})
    if kind in (CA_FORMAT_FILENAME, CA_FORMAT_USER, CA_FORMAT_GROUP, CA_FORMAT_SYMLINK, CA_FORMAT_SELINUX):
        label = {CA_FORMAT_FILENAME: "name", CA_FORMAT_SYMLINK: "target", CA_FORMAT_SELINUX: "label"}
        return (*head, _cstr(label.get(kind, "name"), at, body))
    if kind == CA_FORMAT_PAYLOAD:
        return (*head, Field("data", at, size - 16, data[at:at + min(PREVIEW, size - 16)], BYTES))
    if kind == CA_FORMAT_XATTR:
        name, _, value = body.partition(b"\0")
        return (*head, Field("name", at, len(name) + 1, name, TEXT),
                Field("value", at + len(name) + 1, len(value), value[:PREVIEW], BYTES))
    if kind in (CA_FORMAT_ACL_USER, CA_FORMAT_ACL_GROUP, CA_FORMAT_ACL_DEFAULT_USER,
                CA_FORMAT_ACL_DEFAULT_GROUP):
        who = "uid" if kind in (CA_FORMAT_ACL_USER, CA_FORMAT_ACL_DEFAULT_USER) else "gid"
        fields = head + u64_fields(data, at, (who, "permissions"))
        return (*fields, _cstr("name", at + 16, body[16:])) if len(body) > 16 else fields
    if kind == CA_FORMAT_ACL_GROUP_OBJ:
        return head + u64_fields(data, at, ("permissions",))
    if kind == CA_FORMAT_ACL_DEFAULT:
        return head + u64_fields(data, at, ("user_obj_permissions", "group_obj_permissions",
                                            "other_permissions", "mask_permissions"))
    if kind == CA_FORMAT_QUOTA_PROJID:
        return head + u64_fields(data, at, ("projid",))
    if kind == CA_FORMAT_DEVICE:
        return head + u64_fields(data, at, ("major", "minor"))
    if kind == CA_FORMAT_GOODBYE:
        n = (size - 16) // 24 - 1
        items = tuple(f for i in range(n) for f in u64_fields(
            data, at + 24 * i, (f"item{i}.offset", f"item{i}.size", f"item{i}.hash")))
        return head + items + u64_fields(data, at + 24 * n, ("tail.entry_offset", "tail.size", "tail.marker"),
                                         {"tail.marker": MAGIC})
    if kind == CA_FORMAT_FCAPS:
        return (*head, Field("data", at, len(body), body[:PREVIEW], BYTES))
    return head


def dissect_catar(data: bytes) -> Dissection:
    """Every record the decoder consumes, until the archive ends or breaks."""
    out = Dissection(CATAR, len(data))

    def seen(offset: int, size: int, kind: int, body: bytes) -> None:
        out.records.append(Record(offset, size, CATAR_NAMES.get(kind, f"0x{kind:016x}"),
                                  catar_fields(offset, size, kind, body, data)))

    decoder = CatarDecoder(on_record=seen)
    if data:
        decoder.receive_data(data)
    decoder.receive_data(b"")  # all of it is here: the decoder never waits for more
    entries = 0
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, (EndOfArchive, NeedData)):
                break
            if isinstance(event, EntryEvent):
                entries += 1
    except InvalidFormat as exc:
        offset = decoder.error_offset if decoder.error_offset is not None else decoder.offset
        out.damage.append(Damage(offset, str(exc), *_catar_expectation(data, offset)))
    out.facts["entries"] = entries
    return out


def _catar_expectation(data: bytes, offset: int) -> tuple[str, str]:
    """What stood at the damage: a record header, or the end of the input."""
    if offset >= len(data):
        return "more bytes", f"end of input at {len(data)}"
    if offset + 16 <= len(data):
        size, kind = struct.unpack_from("<2Q", data, offset)
        return "", f"{CATAR_NAMES.get(kind, f'type 0x{kind:016x}')} record of size {size}"
    return "", f"{len(data) - offset} bytes"


# --- chunks ------------------------------------------------------------------------------------

_ZSTD_BLOCK_TYPES = ("raw", "rle", "compressed", "reserved")


def _zstd_records(data: bytes) -> tuple[list[Record], int]:
    """The frame header, blocks and checksum of a zstd frame (RFC 8878 § 3.1.1); and the
    offset where the walk stopped."""
    records: list[Record] = []
    if len(data) < 6:
        return records, 0
    descriptor = data[4]
    single = descriptor >> 5 & 1
    fcs = (0, 2, 4, 8)[descriptor >> 6]
    if not fcs and single:
        fcs = 1
    dict_id = (0, 1, 2, 4)[descriptor & 3]
    header = 5 + (0 if single else 1) + dict_id + fcs
    fields = [Field("magic", 0, 4, int.from_bytes(data[:4], "little"), MAGIC),
              Field("descriptor", 4, 1, descriptor)]
    if not single:
        fields.append(Field("window_descriptor", 5, 1, data[5]))
    if fcs:
        at = header - fcs
        fields.append(Field("content_size", at, fcs, int.from_bytes(data[at:at + fcs], "little")
                            + (256 if fcs == 2 else 0)))
    records.append(Record(0, header, "ZSTD_FRAME_HEADER", tuple(fields)))
    pos = header
    while pos + 3 <= len(data):
        word = int.from_bytes(data[pos:pos + 3], "little")
        last, kind, size = word & 1, word >> 1 & 3, word >> 3
        stored = 1 if kind == 1 else size
        records.append(Record(pos, 3 + stored, "ZSTD_BLOCK", (
            Field("last", pos, 3, last), Field("block_type", pos, 3, kind),
            Field("block_size", pos, 3, size))))
        pos += 3 + stored
        if last:
            if descriptor & 4 and pos + 4 <= len(data):
                records.append(Record(pos, 4, "ZSTD_CHECKSUM", (
                    Field("checksum", pos, 4, int.from_bytes(data[pos:pos + 4], "little")),)))
                pos += 4
            break
    return records, min(pos, len(data))


def dissect_chunk(data: bytes, name: str = "", cipher: ChunkCipher | None = None,
                  digest: str = "sha512-256") -> Dissection:
    """A stored chunk: zstd frame (or plain bytes), under an AEAD layer when ``cipher`` is
    given; the id it hashes to, checked against the id in its name when there is one."""
    out = Dissection(CACNK, len(data))
    if cipher is not None:
        n = cipher.nonce_size
        out.records += [Record(0, min(n, len(data)), "NONCE", (Field("nonce", 0, min(n, len(data)), data[:n], BYTES),)),
                        Record(n, max(0, len(data) - n - TAG_SIZE), "CIPHERTEXT"),
                        Record(max(n, len(data) - TAG_SIZE), TAG_SIZE, "TAG",
                               (Field("tag", len(data) - TAG_SIZE, TAG_SIZE, data[-TAG_SIZE:], BYTES),))]
        out.facts["algorithm"] = cipher.algorithm
        try:
            plain = cipher.open(data)
        except ChunkInvalid as exc:
            out.damage.append(Damage(max(0, len(data) - TAG_SIZE), str(exc), "a tag that authenticates",
                                     "authentication failure"))
            return out
        out.stream = dissect_chunk(plain, name, None, digest)
        return out
    if data.startswith(ZSTD_MAGIC):
        records, stop = _zstd_records(data)
        out.records += records
        try:
            plain = decompress(data)
        except ChunkInvalid as exc:
            out.damage.append(Damage(stop, str(exc), "a complete zstd frame", f"{len(data)} bytes"))
            return out
        out.facts["compression"] = "zstd"
    else:
        out.records.append(Record(0, len(data), "DATA", (Field("data", 0, len(data), data[:PREVIEW], BYTES),)))
        out.facts["compression"] = "none"
        plain = data
    actual = digest_function(digest)(plain)
    out.facts["data_size"] = len(plain)
    out.facts["digest"] = digest
    out.facts["id"] = actual.hex()
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    if len(stem) == 64 and all(c in "0123456789abcdefABCDEF" for c in stem) and stem.lower() != actual.hex():
        out.damage.append(Damage(0, f"chunk id {stem.lower()} does not match its hash {actual.hex()}",
                                 stem.lower(), actual.hex()))
    return out


# --- protocol captures -------------------------------------------------------------------------

def _frame_fields(offset: int, kind: int, body: bytes) -> tuple[Field, ...]:
    at = offset + proto.HEADER_SIZE
    head = (Field("size", offset, 8, proto.HEADER_SIZE + len(body)), Field("type", offset + 8, 8, kind, MAGIC))
    if kind == proto.HELLO:
        return (*head, Field("feature_flags", at, 8, int.from_bytes(body[:8], "little"), PROTOCOL_FLAGS))
    if kind == proto.REQUEST:
        ids = tuple(Field(f"chunk{i}", at + 8 + 32 * i, 32, body[8 + 32 * i:40 + 32 * i], ID)
                    for i in range((len(body) - 8) // 32))
        return (*head, Field("flags", at, 8, int.from_bytes(body[:8], "little")), *ids)
    if kind == proto.CHUNK:
        return (*head, Field("flags", at, 8, int.from_bytes(body[:8], "little")),
                Field("chunk", at + 8, 32, body[8:40], ID),
                Field("data", at + 40, len(body) - 40, body[40:40 + PREVIEW], BYTES))
    if kind == proto.MISSING:
        return (*head, Field("chunk", at, 32, body, ID))
    if kind == proto.ABORT:
        return (*head, Field("error", at, 8, int.from_bytes(body[:8], "little")),
                Field("reason", at + 8, len(body) - 8, body[8:].rstrip(b"\0"), TEXT))
    if kind in (proto.INDEX, proto.ARCHIVE):
        return (*head, Field("data", at, len(body), body[:PREVIEW], BYTES))
    return head


def dissect_protocol(data: bytes) -> Dissection:
    """Frames one way of a casync protocol session, each checked by ``decode_frame``."""
    out = Dissection(PROTOCOL, len(data))
    pos = 0
    while pos < len(data):
        if pos + proto.HEADER_SIZE > len(data):
            out.damage.append(Damage(pos, "stream ended in the middle of a message",
                                     "a 16-byte frame header", f"{len(data) - pos} bytes"))
            break
        size, kind = struct.unpack_from("<2Q", data, pos)
        if size < proto.HEADER_SIZE or size > proto.SIZE_MAX:
            out.damage.append(Damage(pos, f"message of size {size}, outside [{proto.HEADER_SIZE}, {proto.SIZE_MAX}]",
                                     f"{proto.HEADER_SIZE}..{proto.SIZE_MAX}", str(size)))
            break
        if pos + size > len(data):
            out.damage.append(Damage(len(data), "stream ended in the middle of a message",
                                     f"{size} bytes from {pos}", f"{len(data) - pos} bytes"))
            break
        body = data[pos + proto.HEADER_SIZE:pos + size]
        out.records.append(Record(pos, size, proto.TYPE_NAMES.get(kind, f"0x{kind:016x}"),
                                  _frame_fields(pos, kind, body)))
        try:
            proto.decode_frame(kind, body)
        except ProtocolError as exc:
            out.damage.append(Damage(pos, str(exc)))
            break
        pos += size
    out.facts["messages"] = len(out.records)
    return out


__all__ = ["BYTES", "FLAGS", "ID", "MAGIC", "MODE", "TEXT", "TIME", "U64", "Dissection"]
