"""Per-store options, after desync's ``StoreOptions`` (``store.go``) and its command-line flags.

Spec: ``spec/http.md``. The defaults are desync's: ``DefaultErrorRetry`` = 3 attempts,
``DefaultErrorRetryBaseInterval`` = 500 ms (``store.go``), a 1 minute timeout when none is
set (``effectiveTimeout``), and ``-n`` = 10 connections per host (``cmd/desync/options.go``).
Credentials in a location (``http://user:pass@host/``) are shown redacted wherever a location
is printed (:func:`redact`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

DEFAULT_ERROR_RETRY: Final = 3
DEFAULT_ERROR_RETRY_BASE_INTERVAL: Final = 0.5  # seconds
DEFAULT_TIMEOUT: Final = 60.0  # seconds; desync: 0 means 1 minute, negative means none
DEFAULT_CONNECTIONS: Final = 10


@functools.cache
def _userinfo() -> re.Pattern[str]:
    # Up to the last "@" before the path: an unencoded "@" in a password is hidden too.
    # Compiled on first use (about 1 ms, paid only by a run that shows a location).
    return re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced, as Go's ``URL.Redacted``
    (``user:xxxxx@``); a user name alone, which may be a token, is replaced too."""

    def hide(match: re.Match[str]) -> str:
        user, sep, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user + ':' if sep else ''}xxxxx@"

    return _userinfo().sub(hide, text)


@dataclass(frozen=True)
class StoreOptions:
    uncompressed: bool = False
    cache_repair: bool = True
    n: int = DEFAULT_CONNECTIONS
    timeout: float | None = DEFAULT_TIMEOUT  # None: wait forever
    error_retry: int = DEFAULT_ERROR_RETRY
    error_retry_base_interval: float = DEFAULT_ERROR_RETRY_BASE_INTERVAL
    trust_insecure: bool = False
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    http_auth: str | None = None
    http_cookie: str | None = None
    skip_verify: bool = False
    # Chunk encryption (desync StoreOptions: Encryption, EncryptionAlgorithm, EncryptionKey).
    encryption: bool = False
    encryption_algorithm: str | None = None
    encryption_key: str | None = None
    # The config file's credential sections, as loaded (desync Config.S3Credentials and
    # Config.OCICredentials): keyed by endpoint or registry; each backend reads its own.
    s3_credentials: Mapping[str, Mapping[str, Any]] | None = field(default=None, compare=False)
    oci_credentials: Mapping[str, Mapping[str, Any]] | None = field(default=None, compare=False)
    # Set by the command line when a config file is in use: the options for one location
    # (config entry matching it, with the command-line flags on top). Not compared.
    per_location: Callable[[str], StoreOptions] | None = None

    def for_location(self, location: str) -> StoreOptions:
        if self.per_location is None:
            return self
        return replace(self.per_location(location), per_location=None)


DEFAULT_OPTIONS: Final = StoreOptions()

