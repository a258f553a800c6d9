"""The broker's WebSocket port: slots, HTTP answers, handshakes, and one session per client.

Theory of operation. :class:`WebSocketFront` accepts connections and gives each one task,
which goes through these steps, each bounded:

1. **A slot**, the moment the socket is accepted (``_limits.py``): over
   ``max_connections_per_ip`` from its address the socket is refused at once (429), over
   ``max_connections`` it may only take a headroom slot, which serves plain HTTP with a short
   deadline (so ``/healthz`` still answers) and refuses handshakes (503); beyond that it is
   refused at once (503). A slowloris therefore holds at most its address's share of sockets.
2. **The request head** (:meth:`~._connection.WebSocketConnection.read_request`: websockets'
   parser, at most 16 KiB, within ``handshake_timeout``). Garbage gets 400, an over-long head
   431; a silent or slow client is dropped and counted.
3. **Plain HTTP** (a path outside ``/ws/``): ``GET`` of a route (``/healthz``,
   ``/metrics``, the extra routes) gets its answer; other paths 404, other methods 405, a
   handshake to such a path 404. The connection closes after the answer.
4. **A handshake** under ``/ws/`` is checked by websockets' own ``accept`` (method,
   HTTP/1.1, ``Connection``, ``Upgrade``, one valid ``Sec-WebSocket-Key``, one
   ``Sec-WebSocket-Version: 13``: 400, 405, 426 or 505 with the reason otherwise), then
   ``Host``, the ``Origin`` (403) and, behind a trusted proxy, the client's own address
   (429): one parser decides, so exactly the handshakes that can be upgraded reach a backend.
5. **Admission**: ``hub.admit`` asks a backend (bounded by ``request_timeout``). A refusal
   by the backend is by default told in words a browser can read: the ``101`` is sent and the
   socket closed at once with a close code (4401, 4403, 4000+N...) and the reason
   (``_refusals.py``); with ``refuse_with="http"`` it is answered with 403 before any
   upgrade. No backend, or no answer in time, is 503 before the upgrade either way (a
   client retries; one that flushed queued sends on ``open`` would lose them otherwise).
   Refusals that protect the broker (steps 1 to 4) are HTTP statuses before the upgrade
   whatever the setting: a refused client must cost nothing.
6. **The session**: the ``101`` is sent, the client is ``hub.connect``-ed, and
   :meth:`~._connection.WebSocketConnection.serve` hands its messages to ``hub.message``
   inline, pausing when the hub says (flow control toward the backend). When the session
   ends, for whatever reason, ``hub.disconnect`` is called exactly once, then the connection
   finishes its closing handshake (bounded by ``shutdown_timeout``) and closes.

Cancellation. Every connection's task runs in a shielded scope, so that cancelling
:meth:`WebSocketFront.serve` does not tear sockets down mid-frame: the listener stops,
handshakes in progress are dropped, every open WebSocket is closed with 1001 ("going away")
and ``hub.disconnect`` is called for it, all within ``shutdown_timeout`` (then the shield's
deadline cancels whatever is left). :meth:`serve` returns (by raising ``Cancelled``) once every
connection is gone.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio
from websockets.http11 import Request, Response

from ._config import BrokerConfig
from ._connection import BadRequest, WebSocketConnection, http_answer
from ._handshake import client_address, origin_allowed, peer_ip, shape_handshake, split_target
from ._keepalive import enable_keepalive
from ._limits import (
    ConnectionLimits,
    LimitStatistics,
    Slot,
    raise_open_file_limit,
    usable_connections,
)
from ._prometheus import Metric, counter, gauge
from ._refusals import close_reason
from ._transport import SocketTransport, StreamTransport, Transport

if TYPE_CHECKING:
    from ._hub import Hub
    from ._ports import Admission

__all__ = ["REFUSAL_REASONS", "FrontStatistics", "Route", "RouteAnswer", "WebSocketFront"]

logger = logging.getLogger("strands_trio.broker")

#: What a route answers: ``(status, content type, body)``, or the same with extra response
#: headers, ``(status, content type, body, [(name, value), ...])``.
RouteAnswer = tuple[int, str, bytes] | tuple[int, str, bytes, Sequence[tuple[str, str]]]

#: An extra HTTP route: called for each ``GET`` with the raw query string (no ``?``),
#: returns a :data:`RouteAnswer`.
Route = Callable[[str], RouteAnswer]

#: Why connections are refused or dropped before the upgrade, or at once after it for a
#: backend's refusal (the ``reason`` label).
REFUSAL_REASONS = ("origin", "full", "per_ip", "timeout", "bad_request", "backend")

#: Sockets beyond ``max_connections`` that may still get a plain HTTP answer, and how long
#: they have to send their request.
HEADROOM = 32
HEADROOM_TIMEOUT = 2.0

_WS_PREFIX = "/ws/"
_GOING_AWAY = (1001, "going away")
_INTERNAL_ERROR = (1011, "internal error")
_AT_ONCE = {
    "per_ip": (429, b"too many connections from your address\n"),
    "full": (503, b"too many connections\n"),
}


@attrs.frozen(kw_only=True)
class FrontStatistics:
    """What the WebSocket port counts (``BrokerStatistics.front``).

    Attributes:
        open_websockets: WebSocket sessions open now.
        slots: The connection slots in use (every accepted socket holds one).
        accepted: WebSocket sessions opened since the start.
        refused: Connections refused or dropped before the upgrade, by reason: ``origin``,
            ``full``, ``per_ip``, ``timeout``, ``bad_request``, ``backend`` (refused by a
            backend or for want of one: closed at once after the upgrade by default, never
            counted as a session).
        http_requests: Plain HTTP requests answered.
        slow_clients_closed: Clients closed with 1008 because their queue overflowed.
        binary_messages: Binary messages received (passed on as text).
        messages_lost: Messages to clients never written, by reason: ``too_slow`` (dropped
            with a client closed for not reading), ``connection_lost`` (the connection
            broke or closed before they were written).
    """

    open_websockets: int
    slots: LimitStatistics
    accepted: int
    refused: dict[str, int]
    http_requests: int
    slow_clients_closed: int
    binary_messages: int
    messages_lost: dict[str, int]


class _Entry:
    """A connection as the front tracks it, for shutdown."""

    __slots__ = ("conn", "guard", "linger", "session", "work")

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.guard = trio.CancelScope(shield=True)
        self.work = trio.CancelScope()
        self.session = False
        #: Whether to finish the closing handshake (no: a silent client is just dropped).
        self.linger = True


class WebSocketFront:
    """The WebSocket port of a broker (see the module's theory of operation).

    Args:
        hub: The broker's switchboard, asked about handshakes and told about clients.
        config: The broker's settings.
        routes: ``GET`` paths for plain HTTP, each to a :data:`Route` (``serve_broker`` puts
            ``/healthz`` and ``/metrics`` here).
    """

    def __init__(
        self, hub: Hub, config: BrokerConfig, *, routes: Mapping[str, Route] | None = None
    ) -> None:
        self._hub = hub
        self._config = config
        self._routes = dict(routes or {})
        self._limits = ConnectionLimits(
            config.max_connections, config.max_connections_per_ip, HEADROOM
        )
        self._connections: set[_Entry] = set()
        self._closing = False
        self._open = self._accepted = self._http_requests = 0
        self._slow = self._binary = self._lost_slow = self._lost_unwritten = 0
        self._refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self._queue_bytes = config.client_queue_bytes
        self._pause_bytes = max(1, config.client_queue_bytes // 8)

    # ------------------------------------------------------------------ figures

    def statistics(self) -> FrontStatistics:
        """A snapshot of the front's counters."""
        return FrontStatistics(
            open_websockets=self._open,
            slots=self._limits.statistics(),
            accepted=self._accepted,
            refused=dict(self._refused),
            http_requests=self._http_requests,
            slow_clients_closed=self._slow,
            binary_messages=self._binary
            + sum(entry.conn.binary_messages for entry in self._connections),
            messages_lost={
                "too_slow": self._lost_slow,
                "connection_lost": self._lost_unwritten,
            },
        )

    def metrics(self) -> list[Metric]:
        """The front's part of ``GET /metrics``."""
        s = self.statistics()
        refused = [(f'{{reason="{reason}"}}', n) for reason, n in s.refused.items()]
        lost = [(f'{{reason="{reason}"}}', n) for reason, n in s.messages_lost.items()]
        return [
            gauge("ws_slots", "Connections holding a slot (handshakes and sessions)",
                  s.slots.used + s.slots.headroom_used),
            gauge("ws_open", "WebSocket sessions open", s.open_websockets),
            gauge("ws_client_addresses", "Client addresses with a connection", s.slots.addresses),
            gauge("ws_max_connections", "Connections allowed at once", s.slots.max_connections),
            counter("ws_sessions", "WebSocket sessions opened", s.accepted),
            ("ws_handshakes_refused_total", "counter",
             "Connections refused before the upgrade, or at once after it, by reason", refused),
            counter("ws_slow_clients_closed", "Clients closed with 1008 for not reading",
                    s.slow_clients_closed),
            counter("ws_binary_frames", "Binary messages from WebSocket clients",
                    s.binary_messages),
            counter("http_requests", "Plain HTTP requests answered", s.http_requests),
            ("messages_lost_total", "counter", "Messages to clients never written, by reason",
             lost),
        ]  # fmt: skip

    # ------------------------------------------------------------------ serving

    async def serve(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Listen and serve until cancelled; ``task_status.started(port)`` with the bound port.

        Raises:
            OSError: the port cannot be bound.
        """
        config = self._config
        files = raise_open_file_limit()
        self._limits.max_connections = usable_connections(config.max_connections, HEADROOM, files)
        if config.ssl_context is None:
            listeners: list[Any] = await trio.open_tcp_listeners(
                config.ws_port, host=config.ws_host
            )
        else:
            listeners = await trio.open_ssl_over_tcp_listeners(
                config.ws_port, config.ssl_context, host=config.ws_host, https_compatible=True
            )
        async with trio.open_nursery() as drains:  # write-behind tasks of slow clients
            self._drains = drains
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(
                        partial(trio.serve_listeners, self._handle, listeners,
                                handler_nursery=nursery)
                    )  # fmt: skip
                    task_status.started(_port_of(listeners[0]))
                    await trio.sleep_forever()
                finally:
                    self._shut_down()
        raise AssertionError("unreachable")  # pragma: no cover

    def _shut_down(self) -> None:
        self._closing = True
        deadline = trio.current_time() + self._config.shutdown_timeout
        for entry in list(self._connections):
            entry.guard.deadline = deadline
            if entry.session:
                entry.conn.close(*_GOING_AWAY)
            else:
                entry.work.cancel()

    async def _handle(self, stream: trio.abc.Stream) -> None:
        enable_keepalive(stream)  # a client gone without a FIN must not hold its slot forever
        peer = _peer_of(stream)
        if peer is None or self._closing:
            await trio.aclose_forcefully(stream)
            return
        ip = peer_ip(peer[0])
        slot = self._limits.take(None if self._config.trusts(ip) else ip)
        if isinstance(slot, str):
            self._refused[slot] += 1
            await _refuse_at_once(stream, http_answer(*_AT_ONCE[slot]).serialize())
            return
        transport: Transport
        if isinstance(stream, trio.SocketStream):
            transport = SocketTransport(socket.socket(fileno=stream.socket.detach()))
        else:
            transport = StreamTransport(stream)
        conn = WebSocketConnection(
            transport,
            self._drains,
            max_message_size=self._config.max_message_size,
            queue_bytes=self._queue_bytes,
            pause_bytes=self._pause_bytes,
            compression=self._config.compression,
            subprotocols=self._config.subprotocols,
        )
        entry = _Entry(conn)
        self._connections.add(entry)
        try:
            with entry.guard:
                await self._serve(entry, slot, peer)
        except Exception:
            logger.exception("WebSocket port: unexpected error on a connection")
        finally:
            self._connections.discard(entry)
            slot.release()
            self._binary += conn.binary_messages
            self._lost_unwritten += conn.dropped + conn.lost
            with trio.CancelScope(shield=True):
                await conn.aclose()

    async def _serve(self, entry: _Entry, slot: Slot, peer: tuple[str, int]) -> None:
        conn = entry.conn
        admitted = None
        with entry.work:
            admitted = await self._handshake(entry, slot, peer)
        if admitted is not None:
            admission, response = admitted
            if self._closing:
                self._refuse(conn, "full", 503, "the broker is shutting down")
            elif not admission.accepted:  # refuse_with="close": upgraded, then closed at once
                self._refused["backend"] += 1
                conn.accept(response)
                conn.close(admission.close_code, close_reason(admission.reason))
            else:
                conn.accept(response)
                await self._session(entry, admission)
        if entry.linger:
            with trio.move_on_after(self._config.shutdown_timeout):
                await conn.finish()

    async def _session(self, entry: _Entry, admission: Admission) -> None:
        hub, conn = self._hub, entry.conn
        client = hub.connect(admission, conn)
        entry.session = True
        self._open += 1
        self._accepted += 1
        try:
            await conn.serve(partial(hub.message, client), partial(hub.wait_ready, client))
        except Exception:
            logger.exception("WebSocket session failed")
            conn.close(*_INTERNAL_ERROR)
        finally:
            self._open -= 1
            if conn.dropped:  # the output overflowed: closed with 1008 for not reading
                self._slow += 1
                self._lost_slow += conn.dropped
                conn.dropped = 0
            hub.disconnect(client)

    # ------------------------------------------------------------------ before the upgrade

    def _refuse(self, conn: WebSocketConnection, reason: str, status: int, text: str) -> None:
        self._refused[reason] += 1
        headers = [("Allow", "GET")] if status == 405 else []
        conn.respond(status, f"{text}\n".encode(), headers=headers)

    async def _handshake(
        self, entry: _Entry, slot: Slot, peer: tuple[str, int]
    ) -> tuple[Admission, Response] | None:
        """Steps 2 to 5 of the theory of operation: an admission (accepted, or refused to be
        told after the upgrade) and the ``101`` to send, or ``None`` (the connection was
        answered or dropped)."""
        config, conn = self._config, entry.conn
        timeout = HEADROOM_TIMEOUT if slot.headroom else config.handshake_timeout
        try:
            with trio.move_on_after(timeout) as timer:
                request = await conn.read_request()
        except BadRequest:
            self._refused["bad_request"] += 1
            return None
        if timer.cancelled_caught:
            self._refused["timeout"] += 1
            entry.linger = False
            return None
        if request is None:  # closed before saying anything
            return None
        path, query = split_target(request.path)
        upgrade = any("websocket" in v.lower() for v in request.headers.get_all("Upgrade"))
        if not path.startswith(_WS_PREFIX):
            if upgrade:
                self._refuse(conn, "bad_request", 404, "not found")
            else:
                self._answer_http(conn, request, path, query)
            return None
        if slot.headroom:
            self._refuse(conn, "full", 503, "too many connections")
            return None
        response = conn.handshake_response(request)  # websockets' verdict, sent if not 101
        if response.status_code != 101:
            self._refused["bad_request"] += 1
            return None
        headers = request.headers
        hosts = headers.get_all("Host")
        if len(hosts) != 1:
            self._refuse(conn, "bad_request", 400, "exactly one Host header is required")
            return None
        if not origin_allowed(headers.get_all("Origin"), hosts[0], config.allowed_origins):
            self._refuse(conn, "origin", 403, "origin not allowed")
            return None
        ip, remote_addr = client_address(peer, headers.get_all("X-Forwarded-For"), config.trusts)
        if not slot.assign(ip):
            self._refuse(conn, "per_ip", 429, "too many connections from your address")
            return None
        handshake = shape_handshake(
            headers.raw_items(), request.path, remote_addr,
            pass_query_string=config.pass_query_string,
        )  # fmt: skip
        admission = await self._hub.admit(handshake)
        # A transient refusal (no backend, no answer in time: status 503) stays an HTTP answer:
        # a client that writes its queued sends on "open" would lose them into a socket closed
        # at once, and retrying after a 1006 costs it nothing.
        if not admission.accepted and (config.refuse_with == "http" or admission.status == 503):
            self._refuse(conn, "backend", admission.status, admission.reason)
            return None
        return admission, response

    def _answer_http(
        self, conn: WebSocketConnection, request: Request, path: str, query: str
    ) -> None:
        self._http_requests += 1
        route = self._routes.get(path)
        if route is None:
            conn.respond(404, b"not found\n")
        elif request.method != "GET":
            conn.respond(405, b"method not allowed\n", headers=[("Allow", "GET")])
        else:
            headers: Sequence[tuple[str, str]] = ()
            try:
                answer = route(query)
                status, content_type, body = answer[:3]
                if len(answer) == 4:
                    headers = answer[3]
            except Exception:
                logger.exception("HTTP route %s failed", path)
                status, content_type, body = 500, "text/plain", b"internal error\n"
            conn.respond(status, body, content_type, headers)


async def _refuse_at_once(stream: trio.abc.Stream, answer: bytes) -> None:
    """Send *answer* without reading the request, and close (plain TCP only: a TLS client is
    just closed). What the socket does not take at once is not waited for."""
    if isinstance(stream, trio.SocketStream):
        sock = socket.socket(fileno=stream.socket.detach())
        try:
            sock.setblocking(False)
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()
    await trio.aclose_forcefully(stream)


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int] | None:
    inner: Any = getattr(stream, "transport_stream", stream)
    try:
        peer = inner.socket.getpeername()
    except (AttributeError, OSError):  # not a socket, or already reset
        return None
    return str(peer[0]), int(peer[1])


def _port_of(listener: trio.abc.Listener[Any]) -> int:
    inner = getattr(listener, "transport_listener", listener)
    assert isinstance(inner, trio.SocketListener)
    return int(inner.socket.getsockname()[1])
