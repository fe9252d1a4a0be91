"""``dump [-f text|json] [--html] [--range OFFSET:LEN] [-s STORE]... [--compare INDEX]
[--type TYPE] [--encryption-key KEY] [--encryption-algorithm ALG] FILE``: every record of a
casync file with its offset, size, decoded fields and spec section. Spec: ``spec/dump.md``.

Exit status: 0 the file is valid, 1 it is damaged (the damage is in the output), 2 the
dump could not be made (bad usage, unreadable file).
"""

from __future__ import annotations

import argparse
import os
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_remote_options,
    print_json,
    store_options,
)
from desync_ref.cli.usage import UsageError

FORMATS = ("text", "json")
EXIT_DAMAGED = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "dump", "Show every record of an index, archive, chunk or "
                                             "protocol capture")
    parser.add_argument("-f", "--format", default="text", help="output format, text or json")
    parser.add_argument("--html", action="store_true", help="write one self-contained HTML page")
    parser.add_argument("--range", default="", help="only records overlapping OFFSET:LEN")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[],
                        help="store(s) to read a caidx's chunks from: dissect the catar they make up")
    parser.add_argument("--compare", default="", help="second index for the HTML chunk map")
    parser.add_argument("--type", default="",
                        help="caibx, caidx, catar, cacnk or casync-protocol (default: by name and content)")
    parser.add_argument("--encryption-key", default="",
                        help="hex key of an encrypted chunk (default $DESYNC_ENCRYPTION_KEY)")
    parser.add_argument("--encryption-algorithm", default="",
                        help="xchacha20-poly1305 or aes-256-gcm (default: from the chunk's name)")
    add_remote_options(parser)
    parser.add_argument("file", help="file to dissect ('-' for stdin)")
    parser.set_defaults(run=run)


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from desync_ref.audit import dump
    from desync_ref.audit.dump_formats import (
        CACNK,
        CAIBX,
        CAIDX,
        TYPES,
        detect_type,
        encrypted_name,
    )
    from desync_ref.formats.chunk import ChunkCheck, digest_from_flags, digest_function
    from desync_ref.formats.encryption import chunk_cipher
    from desync_ref.stores.location import open_chain
    from desync_ref.stores.storage_form import ENCRYPTION_KEY_ENV

    if args.format not in FORMATS:
        raise UsageError(f'unsupported output format "{args.format}"')
    if args.type and args.type not in TYPES:
        raise UsageError(f'unknown type "{args.type}" (use {", ".join(TYPES)})')
    span = dump.parse_range(args.range) if args.range else None
    if args.range and span is None:
        raise UsageError(f'invalid --range "{args.range}", expected OFFSET:LEN')
    data = _read(args.file)
    kind = args.type or detect_type(args.file, data)
    if kind is None:
        raise UsageError(f"cannot tell what {args.file} is, use --type")
    if args.store and kind != CAIDX:
        raise UsageError("-s only applies to a caidx")
    cipher = None
    algorithm = args.encryption_algorithm or encrypted_name(args.file)
    key = args.encryption_key or (os.environ.get(ENCRYPTION_KEY_ENV, "") if algorithm else "")
    if kind == CACNK and (algorithm or args.encryption_key):
        if not key:
            raise UsageError(f"{args.file} is encrypted: give --encryption-key or ${ENCRYPTION_KEY_ENV}")
        cipher = chunk_cipher(algorithm or None, key)
    digest = getattr(args, "digest", None) or "sha512-256"
    d = dump.dissect(data, kind, args.file, cipher, digest)
    if args.store and d.records and not [x for x in d.damage if x.offset < 64]:
        index_digest = digest_function(digest_from_flags(int(d.records[0].fields[2].value)))
        store = open_chain(args.store, None, index_digest, store_options(args))
        try:
            dump.add_stream(d, lambda cid, size: store.get_chunk(cid, ChunkCheck(index_digest, size)).data())
        finally:
            store.close()
    if span is not None:
        dump.limit_to(d, *span)
    if args.html:
        from desync_ref.audit.html import render_page

        other = None
        if args.compare:
            other_data = _read(args.compare)
            other = dump.dissect(other_data, detect_type(args.compare, other_data) or CAIBX)
        sys.stdout.write(render_page(d, data, os.path.basename(args.file), other,
                                     os.path.basename(args.compare)))
    elif args.format == "json":
        print_json(dump.to_json(d, args.file), sys.stdout)
    else:
        sys.stdout.write("".join(f"{line}\n" for line in dump.text_lines(d, args.file)))
    sys.stdout.flush()
    return 0 if d.valid else EXIT_DAMAGED
