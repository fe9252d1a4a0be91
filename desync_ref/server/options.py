"""Options of the HTTP servers, without importing the server stack (the CLI loads it late).

After desync ``cmdServerOptions`` in ``cmd/desync/options.go``.

Spec: spec/http.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from desync_ref.errors import UsageError


@dataclass
class ServerOptions:
    listen: list[str] = field(default_factory=lambda: [":http"])
    cert: str | None = None
    key: str | None = None
    mutual_tls: bool = False
    client_ca: str | None = None
    authorization: str = ""
    log: str | None = None
    threads: int = 10

    def validate(self) -> None:
        if (self.key is None) != (self.cert is None):
            raise UsageError("--key and --cert options need to be provided together")
        if self.key is None:
            if self.mutual_tls:
                raise UsageError("--mutual-tls requires --cert and --key (TLS must be enabled)")
            if self.client_ca:
                raise UsageError("--client-ca requires --cert and --key (TLS must be enabled)")
        if self.mutual_tls and not self.client_ca:
            raise UsageError("--mutual-tls requires --client-ca (otherwise any certificate trusted "
                             "by the system CA pool would be accepted)")
        if self.client_ca and not self.mutual_tls:
            raise UsageError("--client-ca requires --mutual-tls (otherwise client certificates are not verified)")


def parse_listen(address: str) -> tuple[str | None, int]:
    """Go's ``host:port`` (``:8080``, ``127.0.0.1:http``, ``[::1]:80``); no host = every interface."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise UsageError(f"invalid listen address '{address}' (expected [HOST]:PORT)")
    host = host.removeprefix("[").removesuffix("]")
    try:
        number = int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
    except OSError:
        raise UsageError(f"invalid port in listen address '{address}'") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"invalid port in listen address '{address}'")
    return (host or None), number
