"""Credentials for an OCI registry store, and the registry's authentication challenge.

Spec: ``spec/oci.md`` ("Credentials" and "Authentication"). Lookup order
of desync ``Config.GetOCICredentialsFor`` (``cmd/desync/config.go``), first match wins:

1. ``DESYNC_OCI_USERNAME`` / ``DESYNC_OCI_PASSWORD`` (a password without a user name is an
   error, as in desync);
2. the config file's ``oci-credentials`` section, keyed by the store URL with the same glob
   matching as ``store-options`` (``matchConfigEntry``; more than one match is an error),
   entries ``{"username": ..., "secret": ...}`` (desync ``OCICreds``);
3. the Docker config file, ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
   (oras-go ``credentials.NewStoreFromDocker``): ``auths`` entries keyed by registry host
   (also the legacy ``https://host/v1/`` form), holding ``auth`` (base64 ``user:password``)
   or ``username`` and ``password``. Credential helpers (``credsStore``, ``credHelpers``)
   and identity tokens are not run or used: such a registry is reached anonymously.

No match is anonymous access, which public repositories allow.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from desync_ref.errors import StoreError
from desync_ref.stores.location_match import location_match
from desync_ref.stores.options import redact

ENV_USERNAME: Final = "DESYNC_OCI_USERNAME"
ENV_PASSWORD: Final = "DESYNC_OCI_PASSWORD"
# oras-go credentials.ServerAddressFromRegistry: Docker Hub's entry has its legacy key.
DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_KEY: Final = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str

    def __repr__(self) -> str:  # never show the secret in a traceback or log
        return f"Credential(username={self.username!r}, password=<hidden>)"

    def basic(self) -> str:
        token = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


def lookup(location: str, hostport: str, section: Mapping[str, Mapping[str, Any]] | None,
           environ: Mapping[str, str] | None = None) -> Credential | None:
    """The credential for the store at ``location`` (registry ``hostport``), or None."""
    env = os.environ if environ is None else environ
    username, password = env.get(ENV_USERNAME, ""), env.get(ENV_PASSWORD, "")
    if not username and password:
        raise StoreError(f"{ENV_PASSWORD} is set without {ENV_USERNAME}")
    if username:
        return Credential(username, password)
    if section:
        # The glob matcher of the config file: desync matches this section as store-options.

        found = [entry for key, entry in section.items() if location_match(key, location)]
        if len(found) > 1:
            raise StoreError(f"multiple oci-credentials entries match the location \"{redact(location)}\"")
        if found:
            return Credential(str(found[0].get("username", "")), str(found[0].get("secret", "")))
    return _from_docker_config(hostport, env)


def docker_config_path(environ: Mapping[str, str]) -> Path | None:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; None without either
    (desync ``dockerConfigLocatable``: then access is anonymous)."""
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"]) / "config.json"
    home = environ.get("HOME")
    return Path(home) / ".docker" / "config.json" if home else None


def _host_of_key(key: str) -> str:
    """oras-go ``toHostname``: a legacy key ``https://host/v1/`` names ``host``."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.split("/", 1)[0]


def _from_docker_config(hostport: str, environ: Mapping[str, str]) -> Credential | None:
    path = docker_config_path(environ)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None  # an absent file is an empty credential store
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"failed to load docker credential config {path}: {exc}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"failed to load docker credential config {path}: invalid JSON: {exc.msg}") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    key = DOCKER_HUB_KEY if hostport == DOCKER_HUB else hostport
    entry = auths.get(key)
    if entry is None:
        entry = next((value for name, value in auths.items() if _host_of_key(name) == hostport), None)
    if not isinstance(entry, dict):
        return None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise StoreError(f"docker credential config {path}: \"auth\" of {hostport} is not base64") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise StoreError(f"docker credential config {path}: \"auth\" of {hostport} is not user:password")
        return Credential(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name:
        return Credential(name, secret if isinstance(secret, str) else "")
    return None


# --- WWW-Authenticate (RFC 7235) as registries send it ---------------------------------------

_PARAM: Final = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic", "bearer", ...
    params: dict[str, str]


def parse_challenge(header: str | None) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` → Challenge; None without a header."""
    if not header or not header.strip():
        return None
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)
