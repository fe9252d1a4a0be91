"""Which credentials and region an S3 store signs with, looked up as desync does.

Spec: ``spec/s3.md`` ("Credentials"). After desync ``cmd/desync/config.go``
(``GetS3CredentialsFor``) and ``cmd/desync/credentials.go``
(``RefreshableSharedCredentialsProvider``, ``loadProfile``), in this order:

1. ``S3_ACCESS_KEY`` / ``S3_SECRET_KEY`` / ``S3_SESSION_TOKEN``; when neither key is set,
   ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``. Either found:
   the region is ``S3_REGION`` (desync reads no ``AWS_REGION``).
2. Otherwise the config file's ``s3-credentials`` entry for ``http(s)://host[:port]`` (the
   location's scheme without ``s3+``, and its host as written): ``access-key`` and
   ``secret-key`` if ``access-key`` is set, else the ``aws-credentials-file`` at profile
   ``aws-profile`` (else ``AWS_PROFILE``, else ``default``); the region is ``aws-region``.
3. Nothing found: anonymous (unsigned) requests, as minio does with empty keys.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from desync_ref.errors import StoreError


@dataclass(frozen=True)
class S3Credentials:
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    region: str = ""
    source: str = "none"  # where they came from, for messages: "S3_* environment", ...

    @property
    def anonymous(self) -> bool:
        return not self.access_key and not self.secret_key


def config_key(scheme: str, host: str) -> str:
    """The ``s3-credentials`` key of a location: ``s3+https`` and ``host:port`` ->
    ``https://host:port`` (desync builds a ``url.URL`` of scheme and host)."""
    return f"{scheme.lower().removeprefix('s3+')}://{host}"


def lookup_credentials(scheme: str, host: str, section: Mapping[str, Mapping[str, Any]] | None,
                       environ: Mapping[str, str]) -> S3Credentials:
    """The credentials and region for the endpoint ``scheme://host`` (see the module text)."""
    region = environ.get("S3_REGION", "")
    access, secret, token = (environ.get(k, "") for k in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN"))
    source = "S3_* environment"
    if not access and not secret:
        access, secret, token = (environ.get(k, "") for k in
                                 ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
        source = "AWS_* environment"
    if access or secret:
        return S3Credentials(access, secret, token, region, source)

    key = config_key(scheme, host)
    entry = (section or {}).get(key) or {}
    region = str(entry.get("aws-region", ""))
    if entry.get("access-key"):
        return S3Credentials(str(entry["access-key"]), str(entry.get("secret-key", "")), "", region,
                             f"config s3-credentials \"{key}\"")
    if entry.get("aws-credentials-file"):
        profile = str(entry.get("aws-profile") or environ.get("AWS_PROFILE") or "default")
        return shared_credentials(str(entry["aws-credentials-file"]), profile, region)
    return S3Credentials(region=region)


def shared_credentials(filename: str, profile: str, region: str) -> S3Credentials:
    """A profile of an AWS shared credentials file (INI; desync ``loadProfile``): the keys
    ``aws_access_key_id`` and ``aws_secret_access_key`` are required, ``aws_session_token``
    optional. Read once, when the store opens (desync re-reads it every minute)."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        with open(filename, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise StoreError(f"failed to load shared credentials file {filename}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise StoreError(f"failed to load shared credentials file {filename}: {first}") from None
    if not parser.has_section(profile):
        raise StoreError(f"failed to get profile '{profile}' from shared credentials file {filename}")
    values = parser[profile]
    for needed in ("aws_access_key_id", "aws_secret_access_key"):
        if needed not in values:
            raise StoreError(f"shared credentials {profile} in {filename} did not contain {needed}")
    return S3Credentials(values["aws_access_key_id"].strip(), values["aws_secret_access_key"].strip(),
                         values.get("aws_session_token", "").strip(), region,
                         f"shared credentials file {filename} [{profile}]")
