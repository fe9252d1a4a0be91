"""Options of the HTTP servers (desync ``addServerOptions`` in ``cmd/desync/options.go``) and
the combinations they may be given in (``cmdServerOptions.validate``).

Spec: spec/http.md.
"""

from __future__ import annotations

import argparse
import os

from desync_ref.cli.common import add_remote_options
from desync_ref.cli.usage import UsageError
from desync_ref.server.options import ServerOptions


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--listen", action="append", default=None,
                        help="listen address(es) [HOST]:PORT, can be repeated (default :http)")
    parser.add_argument("--cert", default=None, help="cert file in PEM format, requires --key")
    parser.add_argument("--key", default=None, help="key file in PEM format, requires --cert")
    parser.add_argument("--mutual-tls", action="store_true", help="require valid client certificate")
    parser.add_argument("--client-ca", default=None, help="acceptable client certificate or CA")
    parser.add_argument("--authorization", default=None,
                        help="expected value of the Authorization header (default $DESYNC_HTTP_AUTH)")
    parser.add_argument("--log", default=None, help="request log file or - for stderr")
    parser.add_argument("-n", "--concurrency", type=int, default=10,
                        help="threads for store access and upstream connection pool size")
    add_remote_options(parser)


def server_options(args: argparse.Namespace) -> ServerOptions:
    auth = args.authorization if args.authorization is not None else os.environ.get("DESYNC_HTTP_AUTH", "")
    return ServerOptions(listen=args.listen or [":http"], cert=args.cert, key=args.key,
                         mutual_tls=args.mutual_tls, client_ca=args.client_ca, authorization=auth,
                         log=args.log, threads=max(1, args.concurrency))


def validate_server_options(options: ServerOptions) -> None:
    """desync ``cmdServerOptions.validate``: TLS flags that only work together."""
    if (options.key is None) != (options.cert is None):
        raise UsageError("--key and --cert options need to be provided together")
    if options.key is None:
        if options.mutual_tls:
            raise UsageError("--mutual-tls requires --cert and --key (TLS must be enabled)")
        if options.client_ca:
            raise UsageError("--client-ca requires --cert and --key (TLS must be enabled)")
    if options.mutual_tls and not options.client_ca:
        raise UsageError("--mutual-tls requires --client-ca (otherwise any certificate trusted "
                         "by the system CA pool would be accepted)")
    if options.client_ca and not options.mutual_tls:
        raise UsageError("--client-ca requires --mutual-tls (otherwise client certificates are not verified)")
