"""The broker's settings: a frozen, validated record, from arguments, flags or environment.

Names and defaults of the reference broker's settings are kept (``--ws-port 8080``,
``--tcp-port 8081``, ``--queue-size 1000`` and the ``PYSTRAND_*`` environment variables); the
rest are what this broker adds over the reference, each with a safe default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .._validators import COUNT, OPTIONAL_POSITIVE, PORT, POSITIVE
from ..protocol import DEFAULT_MAX_LINE_LENGTH

__all__ = ["BrokerConfig", "IPNetwork"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trusted_proxies must be IP addresses or networks: {exc}") from exc


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    origins = tuple(str(item).rstrip("/").lower() for item in value)
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(f"an allowed origin is scheme://host[:port] or '*', got {origin!r}")
    return origins


# An HTTP token (RFC 7230 tchar), which a subprotocol name must be (RFC 6455 section 4.1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _subprotocols(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(
                f"a subprotocol is an HTTP token (letters, digits, !#$%&'*+-.^_`|~), got {name!r}"
            )
    return names


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _redis_url(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not (
        isinstance(value, str) and value.startswith(("redis://", "rediss://"))
    ):
        raise ValueError(f"redis_url must be a redis:// or rediss:// URL, got {value!r}")


def _node_id(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _NODE_ID.fullmatch(value)):
        raise ValueError(f"node_id must be 1 to 64 letters, digits, '.', '_' or '-', got {value!r}")


@attrs.frozen(kw_only=True)
class BrokerConfig:
    """How a :func:`~strands_trio.broker.serve_broker` broker listens and behaves.

    Attributes:
        ws_host: The interface for WebSocket clients (all of them by default, as the reference).
        ws_port: The WebSocket port (``0`` picks a free one); WebSocket paths start ``/ws/``.
        backend_host: The interface for backends. ``127.0.0.1`` by default, unlike the
            reference (every interface): whoever reaches this port can act as a backend, see
            every handshake's headers and let anyone in.
        tcp_port: The backends' port.
        queue_size: Events kept while no backend is connected; past it the oldest is dropped
            (counted and logged). They are sent, in order, to the next backend.
        queue_bytes: The same queue's bound in bytes (the oldest events go first past it;
            one event larger than it is still kept alone).
        request_timeout: Seconds a backend has to answer a connection request; then the
            WebSocket handshake is refused with 503. ``None`` waits forever, as the
            reference does (``FakeBroker``'s reference mode).
        heartbeat_interval: Seconds between heartbeats to each backend, or ``None``.
        backend_secret: When set, a backend must first send an ``authenticate`` frame with
            this secret (an extension our client sends with ``ClientConfig.broker_secret``);
            without it, reference-style backends connect as they are.
        backend_stall_timeout: A backend that takes nothing for this many seconds while
            there is something to write (it stopped reading) is disconnected, and its clients
            go to another backend. One that reads, however slowly, is never dropped.
        max_backend_buffer: Bytes waiting to be written to one backend at which the broker
            stops reading the clients that send to it, until it makes room (TCP then pushes
            back on them).
        client_share: Bytes of one client's own events that may wait for its backend before
            the broker stops reading that client: a client that floods slows itself, not
            the others.
        max_line_length: The longest line accepted from a backend.
        client_queue_bytes: Bytes waiting to be written to one WebSocket client. A client
            whose own replies back up is simply read no more until it catches up; one that
            lets others' messages (rooms, broadcasts) fill this while it does not read is
            closed with 1008 rather than slowing the others or growing memory.
        max_message_size: The largest WebSocket message accepted from a client, in bytes (a
            larger one closes the socket with 1009). 128 KiB by default: escaped into a JSON
            line (at most 6 bytes a byte), it stays under a backend's default 1 MiB line
            limit.
        compression: Offer permessage-deflate to clients that ask for it (off by default: it
            costs CPU per message and per client, and memory per connection).
        allowed_origins: Origins (``https://example.com``) whose pages may open sockets, or
            ``("*",)`` for any. Empty by default: only same-origin pages (the ``Origin``'s
            host is the ``Host`` header) and clients that send no ``Origin`` (not browsers).
            The reference accepts every origin, so any web page could open a socket with a
            visitor's cookies.
        trusted_proxies: Peers (addresses or networks) whose ``X-Forwarded-For`` is believed:
            the client's address is then the last address in it that is not a trusted proxy.
            Nobody's by default: a client could claim any address.
        pass_query_string: Also glue the query string to the ``url`` of connection requests,
            for backends that parse it there. Off by default: the query always travels in the
            ``query`` extension field, and the ``url`` stays the path, as the reference sends
            it (backends written for it use the url as a room).
        subprotocols: WebSocket subprotocols the broker may select, in the order of the
            client's offer (the first it offers wins). ``("strands",)`` by default, so that a
            browser offering ``["strands", "bearer.<token>"]`` (a token in the subprotocol)
            gets ``strands`` back, without which it fails the connection. A client offering
            none of these gets no subprotocol (and is not refused).
        refuse_with: How a client refused by a backend (or for want of one) is told:
            ``"close"`` (the default) completes the upgrade and closes at once with a close
            code a browser can read (4401, 4403, 4000+N; ``docs/browser-clients.md``),
            with the reason as close reason; ``"http"`` answers the handshake with 403, which
            a browser sees as close code 1006 with no words. No backend, or no answer in
            time, is HTTP 503 before the upgrade either way (transient: the client retries).
        max_connections: Connections to the WebSocket port at once, counted from the moment
            they are accepted (handshakes as well as open WebSockets); more are refused
            (503). Lowered at start if the open-file limit cannot hold them.
        max_connections_per_ip: The same, from one address; more are refused (429).
        handshake_timeout: Seconds for a client to send its HTTP request head and complete
            the handshake (a slow or silent one is dropped).
        shutdown_timeout: On cancellation, seconds to close clients (1001) and backends.
        ssl_context: TLS for WebSocket clients (``wss://``), or ``None``.
        backend_ssl_context: TLS for the backend link, or ``None``.
        redis_url: ``redis://`` (or ``rediss://``) URL of the Redis through which this broker
            joins a cluster of broker nodes (``docs/cluster.md``); ``None``, the default, is a
            single broker, which never imports the Redis client.
        node_id: This node's id in the cluster (letters, digits, ``.``, ``_``, ``-``; unique
            among the nodes), and in presence replies; a random one by default.
        cluster_prefix: What every Redis key and channel of the cluster starts with, so that
            several clusters (or other programs) can share one Redis.
        serve_strands_js: Serve the browser client, ``strands.js``, at ``GET /strands.js``
            on the WebSocket port (on by default; ``docs/javascript-client.md``).
        node_ttl: Seconds after its last sign of life when a node that stopped (crashed,
            or cut off from Redis) no longer counts: its clients leave presence and the
            registry. Each node renews its own every third of it.
    """

    ws_host: str = "0.0.0.0"
    ws_port: int = attrs.field(default=8080, validator=PORT)
    backend_host: str = "127.0.0.1"
    tcp_port: int = attrs.field(default=8081, validator=PORT)
    queue_size: int = attrs.field(default=1000, validator=COUNT)
    queue_bytes: int = attrs.field(default=16 << 20, validator=COUNT)
    request_timeout: float | None = attrs.field(default=10.0, validator=OPTIONAL_POSITIVE)
    heartbeat_interval: float | None = attrs.field(default=15.0, validator=OPTIONAL_POSITIVE)
    backend_secret: str | None = attrs.field(default=None, repr=False)
    backend_stall_timeout: float = attrs.field(default=10.0, validator=POSITIVE)
    max_backend_buffer: int = attrs.field(default=4 << 20, validator=COUNT)
    client_share: int = attrs.field(default=64 << 10, validator=COUNT)
    max_line_length: int = attrs.field(default=DEFAULT_MAX_LINE_LENGTH, validator=COUNT)
    client_queue_bytes: int = attrs.field(default=4 << 20, validator=COUNT)
    max_message_size: int = attrs.field(default=128 << 10, validator=COUNT)
    compression: bool = False
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    trusted_proxies: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    pass_query_string: bool = False
    subprotocols: tuple[str, ...] = attrs.field(default=("strands",), converter=_subprotocols)
    refuse_with: Literal["close", "http"] = attrs.field(
        default="close", validator=attrs.validators.in_(("close", "http"))
    )
    max_connections: int = attrs.field(default=10_000, validator=COUNT)
    max_connections_per_ip: int = attrs.field(default=256, validator=COUNT)
    handshake_timeout: float = attrs.field(default=10.0, validator=POSITIVE)
    shutdown_timeout: float = attrs.field(default=5.0, validator=POSITIVE)
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    backend_ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    redis_url: str | None = attrs.field(default=None, validator=_redis_url, repr=False)
    node_id: str | None = attrs.field(default=None, validator=_node_id)
    cluster_prefix: str = "strands:"
    node_ttl: float = attrs.field(default=10.0, validator=POSITIVE)
    serve_strands_js: bool = True

    @backend_secret.validator
    def _check_secret(self, _: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or len(value) < 16):
            raise ValueError("backend_secret must be a string of at least 16 characters")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BrokerConfig:
        """The reference broker's environment variables (``PYSTRAND_WS_PORT``,
        ``PYSTRAND_TCP_PORT``, ``PYSTRAND_QUEUE_SIZE``), then *overrides*, over the defaults.

        Raises:
            ValueError: a variable is not an integer, or a value is out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in (
            ("PYSTRAND_WS_PORT", "ws_port"),
            ("PYSTRAND_TCP_PORT", "tcp_port"),
            ("PYSTRAND_QUEUE_SIZE", "queue_size"),
        ):
            raw = env.get(name)
            if raw:
                try:
                    values[field] = int(raw)
                except ValueError:
                    raise ValueError(f"{name} must be an integer, got {raw!r}") from None
        values.update(overrides)
        return cls(**values)

    def trusts(self, address: str) -> bool:
        """Whether *address* (an IP) is one of :attr:`trusted_proxies`."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)
