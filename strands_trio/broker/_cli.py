"""``strands-trio broker``: the broker from the command line, with the reference's flags."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import ssl
import sys
from functools import partial
from typing import Any

import trio

from .._cliutil import add_log_options, configure_logging, host_arg, port_arg
from .._config import SECRET_VARIABLE
from .._util import serve_until_signal
from ._config import BrokerConfig
from ._server import BrokerAddress, ListenError, serve_broker

__all__ = ["add_broker_command", "listen_error_words", "run_broker_command"]

logger = logging.getLogger("strands_trio.broker")

#: The environment variable ``--redis`` defaults to.
REDIS_VARIABLE = "STRANDS_REDIS_URL"


def add_broker_command(commands: Any) -> None:
    """Add the ``broker`` subcommand to the ``strands-trio`` parser."""
    defaults = BrokerConfig()
    parser = commands.add_parser(
        "broker",
        help="run the Trio broker (WebSocket clients <-> backends)",
        description=(
            "Run a PyStrands broker written with Trio: WebSocket clients connect to "
            "ws://HOST:WS_PORT/ws/..., backends to TCP_PORT. Any backend written for the "
            "reference Go broker works with it. Ctrl-C (or SIGTERM) stops it gracefully."
        ),
        epilog=(
            f"Environment: PYSTRAND_WS_PORT, PYSTRAND_TCP_PORT, PYSTRAND_QUEUE_SIZE (as the "
            f"reference broker; flags win), {SECRET_VARIABLE} (the backend secret, kept off "
            f"the command line where other users could see it), {REDIS_VARIABLE} (for "
            "--redis)."
        ),
    )
    add = parser.add_argument
    add(
        "--ws-port",
        type=port_arg,
        help=f"WebSocket/HTTP port (default: $PYSTRAND_WS_PORT or {defaults.ws_port})",
    )
    add(
        "--tcp-port",
        type=port_arg,
        help=f"backends' port (default: $PYSTRAND_TCP_PORT or {defaults.tcp_port})",
    )
    add(
        "--queue-size",
        type=int,
        help="events kept while no backend is connected "
        f"(default: $PYSTRAND_QUEUE_SIZE or {defaults.queue_size})",
    )
    add(
        "--ws-host",
        type=host_arg,
        default=defaults.ws_host,
        help="interface for WebSocket clients (default: %(default)s, all)",
    )
    add(
        "--backend-host",
        type=host_arg,
        default=defaults.backend_host,
        help="interface for backends (default: %(default)s: anyone reaching this port can "
        "act as a backend)",
    )
    add(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout,
        help="seconds a backend has to answer a connection request (default: %(default)s)",
    )
    add(
        "--handshake-timeout",
        type=float,
        default=defaults.handshake_timeout,
        help="seconds a client has to finish its WebSocket handshake (default: %(default)s)",
    )
    add(
        "--shutdown-timeout",
        type=float,
        default=defaults.shutdown_timeout,
        help="seconds a graceful stop may take before what is left is cut off "
        "(default: %(default)s)",
    )
    add(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin (https://example.com) whose pages may connect; repeat for more; '*' "
        "for any (default: same-origin pages and non-browser clients only)",
    )
    add(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a proxy (address or network) whose X-Forwarded-For is believed; repeatable",
    )
    add(
        "--pass-query-string",
        action="store_true",
        help="also glue the query string to connection requests' url, for backends that "
        "parse it there (it is always sent in the 'query' field)",
    )
    add(
        "--refuse-with",
        choices=("close", "http"),
        default="close",
        help="tell a client refused by a backend with a close code after the upgrade "
        "(4401/4403, readable by browsers; the default) or HTTP 403",
    )
    add(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="WebSocket clients at once (default: %(default)s)",
    )
    add(
        "--max-connections-per-ip",
        type=int,
        default=defaults.max_connections_per_ip,
        help="WebSocket clients at once from one address (default: %(default)s)",
    )
    add(
        "--max-message-size",
        type=int,
        default=defaults.max_message_size,
        help="largest WebSocket message a client may send, in bytes; a larger one closes it "
        "with 1009 (default: %(default)s)",
    )
    add(
        "--compression",
        action="store_true",
        help="offer permessage-deflate to clients that ask for it (off by default: it costs "
        "CPU and memory per client)",
    )
    add(
        "--redis",
        metavar="URL",
        default=None,
        help=f"join a cluster of broker nodes through this Redis (redis://host:6379/0; "
        f"default: ${REDIS_VARIABLE}, which keeps a password off the process list); "
        "without it the broker is a single node",
    )
    add("--node-id", help="this node's id in the cluster (default: a random one)")
    add(
        "--cluster-prefix",
        default=defaults.cluster_prefix,
        help="prefix of the cluster's Redis keys and channels (default: %(default)s)",
    )
    add(
        "--node-ttl",
        type=float,
        default=defaults.node_ttl,
        help="seconds after which a node that stopped renewing its registration is taken "
        "for dead and its clients leave presence (default: %(default)s)",
    )
    add("--certfile", help="TLS certificate (PEM) for wss:// clients")
    add("--keyfile", help="TLS private key (PEM) for --certfile")
    add("--backend-certfile", help="TLS certificate (PEM) for the backend port")
    add("--backend-keyfile", help="TLS private key (PEM) for --backend-certfile")
    add_log_options(parser)


def _server_tls(certfile: str | None, keyfile: str | None, what: str) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise SystemExit(f"strands-trio broker: a {what} key needs its certificate too")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(
            f"strands-trio broker: cannot load the {what} certificate: {exc}"
        ) from None
    return context


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """The :class:`BrokerConfig` the parsed flags describe.

    Raises:
        SystemExit: a flag's value is invalid (the message says which).
    """
    try:
        return BrokerConfig.from_env(
            **{
                name: getattr(args, name)
                for name in ("ws_port", "tcp_port", "queue_size")
                if getattr(args, name) is not None  # flags win over the environment
            },
            ws_host=args.ws_host,
            backend_host=args.backend_host,
            request_timeout=args.request_timeout,
            handshake_timeout=args.handshake_timeout,
            shutdown_timeout=args.shutdown_timeout,
            backend_secret=os.environ.get(SECRET_VARIABLE) or None,
            allowed_origins=tuple(args.allowed_origin),
            trusted_proxies=tuple(args.trusted_proxy),
            pass_query_string=args.pass_query_string,
            refuse_with=args.refuse_with,
            max_connections=args.max_connections,
            max_connections_per_ip=args.max_connections_per_ip,
            max_message_size=args.max_message_size,
            compression=args.compression,
            ssl_context=_server_tls(args.certfile, args.keyfile, "WebSocket"),
            backend_ssl_context=_server_tls(args.backend_certfile, args.backend_keyfile, "backend"),
            redis_url=args.redis or os.environ.get(REDIS_VARIABLE) or None,
            node_id=args.node_id,
            cluster_prefix=args.cluster_prefix,
            node_ttl=args.node_ttl,
        )
    except ValueError as exc:
        raise SystemExit(f"strands-trio broker: {exc}") from None


def run_broker_command(args: argparse.Namespace) -> int:
    """Run the broker until SIGINT or SIGTERM; return the exit status."""
    configure_logging(args)
    config = config_from_args(args)
    if config.ws_port == config.tcp_port != 0:
        print(
            f"strands-trio broker: cannot listen: the WebSocket port and the backends' port are "
            f"both {config.ws_port}; give them different ports (--ws-port, --tcp-port)",
            file=sys.stderr,
        )
        return 1
    try:
        trio.run(partial(_serve_until_signal, config))
    except OSError as exc:
        print(f"strands-trio broker: {listen_error_words(exc)}", file=sys.stderr)
        return 1
    return 0


def listen_error_words(exc: OSError) -> str:
    """One line for a port that cannot be bound: :class:`ListenError` names the listener and
    its address; a bare :class:`OSError` (none should reach here) says what it can."""
    if isinstance(exc, ListenError):
        return str(exc)
    what = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
    return f"cannot listen: {what}"


async def _serve_until_signal(config: BrokerConfig) -> None:
    def banner(address: BrokerAddress) -> None:
        scheme = "wss" if config.ssl_context else "ws"
        print(
            f"strands-trio broker: WebSocket clients on {scheme}://{config.ws_host}:"
            f"{address.ws_port}/ws/..., backends on {config.backend_host}:{address.tcp_port}"
            + (f", cluster node {address.hub.node_id}" if config.redis_url else ""),
            flush=True,
        )

    await serve_until_signal(partial(serve_broker, config), logger, banner)
