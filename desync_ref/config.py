"""desync's config file: ``$HOME/.config/desync/config.json`` or ``--config FILE``.

Spec: ``spec/http.md`` ("Config file"). Format of desync ``cmd/desync/config.go``
(``Config``: ``s3-credentials``, ``oci-credentials``, ``store-options``) with the store
option names of ``StoreOptions`` in ``store.go``. ``store-options`` is keyed by location;
keys may be glob patterns (``locationMatch`` in ``cmd/desync/location.go``: URLs compared
with ``path.Match`` after dropping a trailing ``/``, paths made absolute first), and more
than one matching key is an error (``matchConfigEntry``). Durations are Go
``time.Duration`` values, i.e. integer nanoseconds in JSON. Unlike desync, unknown keys are
refused rather than ignored, so that a typo does not silently do nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from desync_ref.errors import DesyncRefError
from desync_ref.stores.location_match import location_match
from desync_ref.stores.options import (
    DEFAULT_ERROR_RETRY,
    DEFAULT_ERROR_RETRY_BASE_INTERVAL,
    DEFAULT_TIMEOUT,
    StoreOptions,
    redact,
)

NANOSECONDS: Final = 1_000_000_000

# (JSON key, kind) in desync's field order; "uncompressed" is the one key without omitempty.
STORE_OPTION_KEYS: Final[dict[str, type]] = {
    "n": int,
    "client-cert": str,
    "client-key": str,
    "ca-cert": str,
    "trust-insecure": bool,
    "http-auth": str,
    "http-cookie": str,
    "timeout": int,
    "error-retry": int,
    "error-retry-base-interval": int,
    "skip-verify": bool,
    "uncompressed": bool,
    "encryption": bool,
    "encryption-algorithm": str,
    "encryption-key": str,
}
# desync S3Creds (cmd/desync/config.go), one entry per "http(s)://host[:port]" endpoint.
S3_CREDENTIAL_KEYS: Final[dict[str, type]] = {
    "access-key": str,
    "secret-key": str,
    "aws-credentials-file": str,
    "aws-profile": str,
    "aws-region": str,
}
TOP_LEVEL_KEYS: Final = ("s3-credentials", "oci-credentials", "store-options")
# desync OCICreds (cmd/desync/config.go): both strings, omitempty, in this order.
OCI_CREDENTIAL_KEYS: Final = ("username", "secret")


class ConfigError(DesyncRefError):
    """A config file that cannot be read or does not follow desync's format."""


def default_config_path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".config" / "desync" / "config.json"


@dataclass
class Config:
    path: Path
    store_options: dict[str, dict[str, Any]] | None = None
    s3_credentials: dict[str, Any] | None = None
    oci_credentials: dict[str, Any] | None = None
    loaded: bool = field(default=False)

    def to_json(self, *, shown: bool = False) -> str:
        """desync ``runConfig``: ``json.MarshalIndent`` with two spaces (Go sorts map keys).
        ``shown``: for the screen, credentials in location keys redacted (not for the file)."""
        options = None
        if self.store_options is not None:
            options = {(redact(key) if shown else key): _entry_json(entry)
                       for key, entry in sorted(self.store_options.items())}
        value = {"s3-credentials": _sorted(self.s3_credentials),
                 "oci-credentials": _sorted(None if self.oci_credentials is None else {
                     key: {k: entry[k] for k in OCI_CREDENTIAL_KEYS if entry.get(k)}
                     for key, entry in self.oci_credentials.items()}),
                 "store-options": options}
        import json

        return json.dumps(value, indent=2, ensure_ascii=False)

    def options_for(self, location: str) -> dict[str, Any]:
        """The one ``store-options`` entry matching ``location`` (with defaults), or defaults."""
        found: dict[str, Any] | None = None
        for key, entry in (self.store_options or {}).items():
            if location_match(key, location):
                if found is not None:
                    raise ConfigError(f"multiple store-options entries match the location \"{location}\"")
                found = entry
        return _with_defaults(found or {})


def _sorted(section: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if section is None else dict(sorted(section.items()))


def _with_defaults(entry: dict[str, Any]) -> dict[str, Any]:
    # desync's StoreOptions.UnmarshalJSON: the retry defaults apply to every loaded entry.
    merged: dict[str, Any] = {"error-retry": DEFAULT_ERROR_RETRY,
                              "error-retry-base-interval": int(DEFAULT_ERROR_RETRY_BASE_INTERVAL * NANOSECONDS),
                              "uncompressed": False}
    merged.update(entry)
    return merged


def _entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    full = _with_defaults(entry)
    return {key: full[key] for key in STORE_OPTION_KEYS
            if key in full and (full[key] not in ("", 0, False) or key == "uncompressed")}


def _check_entry(where: str, entry: object, keys: dict[str, type] = STORE_OPTION_KEYS) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    for key, value in entry.items():
        kind = keys.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key \"{key}\"")
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, str))
        if not ok:
            raise ConfigError(f"{where}: \"{key}\" must be {_kind_name(kind)}")
    return dict(entry)


def _check_oci_credentials(where: str, entry: object) -> dict[str, Any]:
    """One ``oci-credentials`` entry: only ``username`` and ``secret``, both strings."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    for key, value in entry.items():
        if key not in OCI_CREDENTIAL_KEYS:
            raise ConfigError(f"{where}: unknown key \"{key}\"")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: \"{key}\" must be a string")
    return dict(entry)


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", str: "a string"}[kind]


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The config at ``path``, or the default one; a missing default file is an empty config."""
    explicit = path is not None
    file = Path(path) if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"reading {file}: not UTF-8 text (byte {exc.start})") from None
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {file} not found") from None
        return Config(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    import json  # here: most runs find no config file and never parse one

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"reading {file}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"reading {file}: expected a JSON object")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"reading {file}: unknown key \"{key}\"")
    config = Config(file, loaded=True)
    sections: list[tuple[str, str]] = [("s3-credentials", "s3_credentials"), ("oci-credentials", "oci_credentials")]
    for key, attr in sections:
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"reading {file}: \"{key}\" must be an object")
        if key == "oci-credentials" and value is not None:
            value = {loc: _check_oci_credentials(f"reading {file}: oci-credentials \"{redact(loc)}\"", entry)
                     for loc, entry in value.items()}
        setattr(config, attr, value)
    s3 = data.get("s3-credentials")
    if s3 is not None:
        config.s3_credentials = {endpoint: _check_entry(f"reading {file}: s3-credentials \"{endpoint}\"", entry,
                                                        S3_CREDENTIAL_KEYS)
                                 for endpoint, entry in s3.items()}
    options = data.get("store-options")
    if options is not None:
        if not isinstance(options, dict):
            raise ConfigError(f"reading {file}: \"store-options\" must be an object")
        config.store_options = {loc: _check_entry(f"reading {file}: store-options \"{loc}\"", entry)
                                for loc, entry in options.items()}
    return config


def write_config(config: Config) -> None:
    """``config -w``: the file is replaced whole (mode 0600, as desync creates it).

    The new content goes to a fresh temp file beside the target, made with O_EXCL (so no
    stale file or symlink of that name is reused, and the mode is 0600 from the start) and
    renamed over the target; on any error it is removed."""
    import tempfile

    target = config.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(config.to_json())
            out.write("\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def apply_entry(base: StoreOptions, entry: dict[str, Any]) -> StoreOptions:
    """A config entry as StoreOptions (durations from nanoseconds; timeout 0 = 1 minute)."""
    timeout_ns = int(entry.get("timeout", 0))
    timeout: float | None = DEFAULT_TIMEOUT if timeout_ns == 0 else (None if timeout_ns < 0 else timeout_ns / NANOSECONDS)
    return replace(
        base,
        timeout=timeout,
        error_retry=int(entry.get("error-retry", DEFAULT_ERROR_RETRY)),
        error_retry_base_interval=int(entry["error-retry-base-interval"]) / NANOSECONDS,
        trust_insecure=bool(entry.get("trust-insecure", False)),
        ca_cert=entry.get("ca-cert") or None,
        client_cert=entry.get("client-cert") or None,
        client_key=entry.get("client-key") or None,
        http_auth=entry.get("http-auth") or None,
        http_cookie=entry.get("http-cookie") or None,
        skip_verify=bool(entry.get("skip-verify", False)),
        uncompressed=bool(entry.get("uncompressed", False)),
        encryption=bool(entry.get("encryption", False)),
        encryption_algorithm=entry.get("encryption-algorithm") or None,
        encryption_key=entry.get("encryption-key") or None,
    )
