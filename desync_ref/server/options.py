"""Options of the HTTP servers, without importing the server stack (the CLI loads it late).

After desync ``cmdServerOptions`` in ``cmd/desync/options.go``. Which combinations the
command line accepts is checked in ``cli/server_options.py``.

Spec: spec/http.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from desync_ref.errors import InvalidParameter


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


def parse_listen(address: str) -> tuple[str | None, int]:
    """Go's ``host:port`` (``:8080``, ``127.0.0.1:http``, ``[::1]:80``); no host = every interface."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise InvalidParameter(f"invalid listen address '{address}' (expected [HOST]:PORT)", parameter="listen")
    host = host.removeprefix("[").removesuffix("]")
    try:
        # Only ASCII digits are a number (str.isdigit also takes "²"), and a port has at
        # most 5 of them; anything else is a service name, which may not hold NUL.
        if port.isascii() and port.isdigit():
            number = int(port) if len(port) <= 5 else -1
        else:
            number = socket.getservbyname(port, "tcp")
    except (OSError, ValueError, UnicodeError):
        raise InvalidParameter(f"invalid port in listen address '{address}'", parameter="listen") from None
    if not 0 <= number <= 65535:
        raise InvalidParameter(f"invalid port in listen address '{address}'", parameter="listen")
    return (host or None), number
