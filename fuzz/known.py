"""Crashes found by fuzzing and not fixed yet, so the CI pass can tell a known one from a new one.

Each entry: (target, exception type name, innermost ``desync_ref`` function) -> the bug, as
written in ``fuzz/crashes/README.md``. Every entry has a strict-xfail regression test in
``tests/test_fuzz_regressions.py``; when a bug is fixed, its regression test starts passing
(XPASS fails the run), the marker and the entry here are removed together.
"""

from __future__ import annotations

import traceback

_MTIME = "tarstream: PAX mtime before 1970 or not digits[.digits] (negative-pax-mtime.tar, exponent-pax-mtime.tar)"
_LISTEN = "parse_listen: port/service text that int()/getservbyname refuse with ValueError/UnicodeEncodeError"

KNOWN: dict[tuple[str, str, str], str] = {
    ("tarstream", "error", "encode_entry"): _MTIME,
    ("tarstream", "ValueError", "_mtime_ns"): _MTIME,
    ("config", "UnicodeDecodeError", "load_config"): "config: a file that is not UTF-8 (non-utf8.json)",
    ("listen_address", "ValueError", "parse_listen"): _LISTEN,
    ("listen_address", "UnicodeEncodeError", "parse_listen"): _LISTEN,
    ("untar", "OverflowError", "other"): "untar: a device number over 32 bits (device-number-over-32-bits.catar)",
    ("untar", "OverflowError", "_meta"): "untar: a uid/gid that fchown cannot take (gid-out-of-range.catar)",
    ("untar", "error", "build_acl"): "untar: an ACL entry id over 32 bits or permissions over 16 bits",
    ("untar", "error", "build_default_acl"): "untar: a default-ACL entry id over 32 bits",
    ("untar", "FdLeak", "?"): "untar: a restore that fails leaves DiskSink's directory descriptors open",
    ("catar_sinks", "OverflowError", "_numeric"):
        "untar --output-format gnu-tar: a number over 63 bits (gnutar-uid-over-63-bits.catar)",
}


def signature(target: str, exc: BaseException) -> tuple[str, str, str]:
    # Innermost named function of desync_ref (a generator expression names its enclosing one).
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/desync_ref/" in f.filename and not f.name.startswith("<")]
    return (target, type(exc).__name__, frames[-1].name if frames else "?")


def known(target: str, exc: BaseException) -> str | None:
    return KNOWN.get(signature(target, exc))
