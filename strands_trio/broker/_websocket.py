"""The broker's WebSocket port: HTTP answers, handshakes, and one session per client.

Theory of operation. :func:`serve_websockets` listens (TLS when configured) and gives every TCP
connection a task that goes through these steps, each bounded:

1. Read the request head (:class:`~._http.RequestReader`, at most 16 KiB, within
   ``handshake_timeout``). A silent or slow client, or one that sends garbage, is dropped and
   counted (garbage gets a 400 first).
2. A request that is not a WebSocket upgrade is plain HTTP: ``GET /healthz`` (JSON of
   ``hub.health()``), ``GET /metrics`` (``hub.metrics_text()``), the ``extra_routes``; 404 or
   405 otherwise. The connection closes after the answer.
3. A handshake is checked before any backend hears of it, each refusal an HTTP status and no
   upgrade: path under ``/ws/`` (404), a well-formed handshake (400/405/426), the ``Origin``
   (403), the total number of connections (503) and those from the client's address (429).
   From here until the socket closes the connection holds a slot against those two limits.
4. ``hub.admit`` asks a backend (the hub bounds the wait by ``request_timeout``); a refusal is
   answered with its status (403/503).
5. Accepted: the bytes already read are replayed to trio-websocket, which answers ``101``
   (within ``handshake_timeout``). The client gets a :class:`_Link` and is
   ``hub.connect``-ed; a reader loop passes its messages to ``hub.message`` and a writer task
   sends what the hub delivers to the link. When the session ends, for whatever reason,
   ``hub.disconnect`` is called exactly once and the socket is closed with the code the link
   was given (1000 if none), the close handshake bounded by ``shutdown_timeout``.

Client messages: a text frame is passed on as it is; a binary frame is decoded as UTF-8 with
undecodable bytes replaced and passed on as text (the reference passes binary frames on as
strings too), and counted. A message larger than ``max_message_size`` (as trio-websocket
measures it: bytes for a binary message, characters for a text one) closes the socket with 1009.

Messages to a client go through the link's bounded queue (``client_queue_size``):
:meth:`_Link.deliver` never blocks the hub; a full queue closes the client with 1008 ("too slow")
and drops what it held. :meth:`_Link.close` stops the reader, lets the writer flush what is
queued, then closes with the code given.

Cancellation. Every connection's task runs in a shielded scope, so that cancelling
:func:`serve_websockets` does not tear sockets down mid-frame: the listener stops, handshakes in
progress are dropped, every open WebSocket is closed with 1001 ("going away") and
``hub.disconnect`` is called for it, all within ``shutdown_timeout`` (then the shield's deadline
cancels whatever is left). :func:`serve_websockets` returns (by raising ``Cancelled``) once every
connection is gone.

Figures: the front's own counters are :meth:`WebSocketFront.statistics` and, through
``hub.front``, lines of the hub's ``/metrics`` (:meth:`WebSocketFront.metrics_lines`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio
import trio_websocket

from ._config import BrokerConfig
from ._http import (
    BadRequest,
    HttpRequest,
    ReplayStream,
    RequestReader,
    client_address,
    origin_allowed,
    status_phrase,
)
from ._keepalive import enable_keepalive
from ._prometheus import Metric, render

if TYPE_CHECKING:
    from ._hub import Admission, Hub

__all__ = ["FrontStatistics", "Route", "WebSocketFront", "serve_websockets"]

logger = logging.getLogger("strands_trio.broker")

#: An extra HTTP route: called for each ``GET`` with the raw query string (no ``?``),
#: returns ``(status, content type, body)``.
Route = Callable[[str], tuple[int, str, bytes]]

#: Why handshakes are refused before the upgrade (the ``reason`` label of the metric).
REFUSAL_REASONS = ("origin", "full", "per_ip", "timeout", "bad_request", "backend")

_WS_PREFIX = "/ws/"
_SLOW = (1008, "too slow: message queue full")
_GOING_AWAY = (1001, "going away")
_INTERNAL_ERROR = (1011, "internal error")


@attrs.frozen(kw_only=True)
class FrontStatistics:
    """What the WebSocket front counts (:meth:`WebSocketFront.statistics`).

    Attributes:
        connections: WebSocket connections holding a slot against the limits: being admitted
            by a backend, or open.
        open_websockets: WebSocket sessions open now.
        connections_per_ip: Slots held, by client address.
        accepted: WebSocket sessions opened since the start.
        refused: Handshakes refused or dropped before the upgrade, by reason: ``origin``,
            ``full`` (503), ``per_ip`` (429), ``timeout`` (silent or slow client),
            ``bad_request`` (garbage, wrong path, malformed handshake), ``backend`` (the
            admission said no).
        slow_clients_closed: Clients closed with 1008 because their queue was full.
        binary_frames: Binary messages from clients (passed on as text).
        http_requests: Plain HTTP requests answered.
    """

    connections: int
    open_websockets: int
    connections_per_ip: Mapping[str, int]
    accepted: int
    refused: Mapping[str, int]
    slow_clients_closed: int
    binary_frames: int
    http_requests: int


class _Link:
    """One client's :class:`~._hub.ClientLink`: a bounded queue to its writer task, and the
    close code the session ends with."""

    __slots__ = (
        "_front",
        "_max_chars",
        "_queued_chars",
        "_receive",
        "_send",
        "close_code",
        "close_reason",
        "reader_scope",
    )

    def __init__(self, front: WebSocketFront, size: int, max_chars: int) -> None:
        self._front = front
        self._send, self._receive = trio.open_memory_channel[str](size)
        # Messages from backends can be large: the queue is bounded in characters too.
        self._max_chars = max_chars
        self._queued_chars = 0
        self.reader_scope = trio.CancelScope()
        self.close_code: int | None = None
        self.close_reason = ""

    def deliver(self, message: str) -> bool:
        """Queue *message* without blocking; on a full queue close with 1008 and say
        ``False`` (also ``False`` once the link is closing)."""
        if self.close_code is not None:
            return False
        try:
            if self._queued_chars + len(message) > self._max_chars and self._queued_chars:
                raise trio.WouldBlock
            self._send.send_nowait(message)
            self._queued_chars += len(message)
        except trio.WouldBlock:
            self._front._slow_clients_closed += 1
            logger.warning("a WebSocket client let its queue fill up: closing it with 1008")
            self.close(*_SLOW)
            self._receive.close()  # what it holds will not be read in time anyway
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """End the session with *code* and *reason*, once what is queued is written (the first
        call decides). A code a WebSocket endpoint may not send becomes 1000."""
        if self.close_code is None:
            if not _sendable(code):
                logger.warning("close code %r cannot be sent: closing with 1000", code)
                code = 1000
            self.close_code, self.close_reason = code, reason
            self._send.close()
            self.reader_scope.cancel()

    def finish(self) -> None:
        """Accept no more messages (the session is ending)."""
        self._send.close()

    async def next_message(self) -> str | None:
        """The next queued message, or ``None`` once the queue is closed and empty."""
        try:
            message = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None
        self._queued_chars -= len(message)
        return message


class _Connection:
    """The scopes of one TCP connection: *guard* shields it from the server's cancellation
    (shutdown sets its deadline instead), *work* covers everything before the session."""

    __slots__ = ("guard", "ip", "link", "work")

    def __init__(self) -> None:
        self.guard = trio.CancelScope(shield=True)
        self.work = trio.CancelScope()
        self.ip: str | None = None
        self.link: _Link | None = None

    def shut_down(self, deadline: float) -> None:
        self.guard.deadline = min(self.guard.deadline, deadline)
        self.work.cancel()
        if self.link is not None:
            self.link.close(*_GOING_AWAY)


def _sendable(code: int) -> bool:
    """Whether *code* may be sent in a close frame (RFC 6455 7.4, and the registered 1012-1014)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int] | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        address = stream.socket.getpeername()
    except OSError:  # the peer is already gone
        return None
    return str(address[0]), int(address[1])


def _port_of(listener: trio.abc.Listener[Any]) -> int:
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener)
    return int(listener.socket.getsockname()[1])


class WebSocketFront:
    """The WebSocket port of a broker (see the module's theory of operation).

    Args:
        hub: The broker's state, asked about handshakes and told about clients.
        config: The broker's settings.
        extra_routes: More ``GET`` paths for plain HTTP, each to a :data:`Route`.
    """

    def __init__(
        self, hub: Hub, config: BrokerConfig, *, extra_routes: Mapping[str, Route] | None = None
    ) -> None:
        self._hub = hub
        self._config = config
        self._routes: dict[str, Route] = {
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            **(extra_routes or {}),
        }
        self._connections: set[_Connection] = set()
        self._closing = False
        self._slots = 0
        self._per_ip: dict[str, int] = {}
        self._open = self._accepted = self._slow_clients_closed = 0
        self._binary_frames = self._http_requests = 0
        self._refused = dict.fromkeys(REFUSAL_REASONS, 0)

    # ------------------------------------------------------------------ figures

    def statistics(self) -> FrontStatistics:
        """A snapshot of the front's counters."""
        return FrontStatistics(
            connections=self._slots,
            open_websockets=self._open,
            connections_per_ip=dict(self._per_ip),
            accepted=self._accepted,
            refused=dict(self._refused),
            slow_clients_closed=self._slow_clients_closed,
            binary_frames=self._binary_frames,
            http_requests=self._http_requests,
        )

    def metrics_lines(self) -> list[str]:
        """The front's figures in the Prometheus text format, for the hub's ``/metrics``."""
        refused = [(f'{{reason="{reason}"}}', n) for reason, n in self._refused.items()]
        table: list[Metric] = [
            ("ws_slots", "gauge", "WebSocket connections being admitted or open",
             [("", self._slots)]),
            ("ws_open", "gauge", "WebSocket sessions open", [("", self._open)]),
            ("ws_client_addresses", "gauge", "Client addresses with a WebSocket connection",
             [("", len(self._per_ip))]),
            ("ws_sessions_total", "counter", "WebSocket sessions opened", [("", self._accepted)]),
            ("ws_handshakes_refused_total", "counter",
             "WebSocket handshakes refused or dropped before the upgrade, by reason", refused),
            ("ws_slow_clients_closed_total", "counter",
             "WebSocket clients closed with 1008 for not keeping up",
             [("", self._slow_clients_closed)]),
            ("ws_binary_frames_total", "counter", "Binary messages from WebSocket clients",
             [("", self._binary_frames)]),
            ("http_requests_total", "counter", "Plain HTTP requests answered",
             [("", self._http_requests)]),
        ]  # fmt: skip
        return render(table)

    def _healthz(self, query: str) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self._hub.health()).encode()

    def _metrics(self, query: str) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", self._hub.metrics_text().encode()

    # ------------------------------------------------------------------ serving

    async def serve(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Listen and serve until cancelled; ``task_status.started(port)`` with the bound port.

        Raises:
            OSError: the port cannot be bound.
        """
        config = self._config
        async with trio.open_nursery() as nursery:
            try:
                serve: Callable[..., Any]
                if config.ssl_context is None:
                    serve = partial(trio.serve_tcp, self._handle, config.ws_port)
                else:
                    serve = partial(
                        trio.serve_ssl_over_tcp,
                        self._handle,
                        config.ws_port,
                        config.ssl_context,
                        https_compatible=True,
                    )
                listeners = await nursery.start(
                    partial(serve, host=config.ws_host, handler_nursery=nursery)
                )
                task_status.started(_port_of(listeners[0]))
                await trio.sleep_forever()
            finally:
                self._shut_down()
        raise AssertionError("unreachable")  # pragma: no cover

    def _shut_down(self) -> None:
        self._closing = True
        deadline = trio.current_time() + self._config.shutdown_timeout
        for connection in list(self._connections):
            connection.shut_down(deadline)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        enable_keepalive(stream)  # a client gone without a FIN must not hold its slot forever
        connection = _Connection()
        with connection.guard:
            try:
                if not self._closing:
                    self._connections.add(connection)
                    await self._serve_connection(stream, connection)
            except Exception:
                logger.exception("WebSocket port: unexpected error on a connection")
            finally:
                self._connections.discard(connection)
                if connection.ip is not None:
                    self._release(connection.ip)
                await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.abc.Stream, connection: _Connection) -> None:
        peer = _peer_of(stream)
        if peer is None:
            return
        async with trio.open_nursery() as ws_nursery:  # trio-websocket's reader task
            accepted = None
            with connection.work:
                accepted = await self._handshake(stream, connection, peer, ws_nursery)
            if accepted is not None:
                assert connection.link is not None
                await self._session(*accepted, connection.link)
            ws_nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ before the upgrade

    def _refuse(self, reason: str) -> None:
        self._refused[reason] += 1

    async def _handshake(
        self,
        stream: trio.abc.Stream,
        connection: _Connection,
        peer: tuple[str, int],
        ws_nursery: trio.Nursery,
    ) -> tuple[trio_websocket.WebSocketConnection, Admission] | None:
        """Steps 1 to 5 of the theory of operation: an open WebSocket and its admission, or
        ``None`` (the connection was answered or dropped)."""
        config = self._config
        reader = RequestReader()
        with trio.move_on_after(config.handshake_timeout) as timer:
            checked = await self._read_handshake(reader, stream, connection, peer)
        if timer.cancelled_caught:
            self._refuse("timeout")
            return None
        if checked is None:
            return None
        request, remote_addr = checked
        url = request.url(query_string=config.pass_query_string)
        admission = await self._hub.admit(request.wire_headers(), url, remote_addr)
        if not admission.accepted:
            self._refuse("backend")
            status = admission.status
            text = "refused by the backend" if status == 403 else status_phrase(status).lower()
            with trio.move_on_after(config.handshake_timeout):
                await reader.refuse(stream, status, text)
            return None
        connection.link = _Link(self, config.client_queue_size, config.client_queue_chars)
        with trio.move_on_after(config.handshake_timeout):
            ws_request = await trio_websocket.wrap_server_stream(
                ws_nursery,
                ReplayStream(stream, request.received),
                max_message_size=config.max_message_size,
            )
            try:
                return await ws_request.accept(), admission
            except trio_websocket.ConnectionClosed:  # the client left while it was admitted
                return None
        self._refuse("timeout")
        return None

    async def _read_handshake(
        self,
        reader: RequestReader,
        stream: trio.abc.Stream,
        connection: _Connection,
        peer: tuple[str, int],
    ) -> tuple[HttpRequest, str] | None:
        """Steps 1 to 3: a handshake that passed the checks and its ``remote_addr``, or
        ``None`` (the connection was answered or dropped)."""
        try:
            request = await reader.read(stream)
        except BadRequest as exc:
            self._refuse("bad_request")
            await reader.refuse(stream, exc.status, status_phrase(exc.status).lower())
            return None
        if request is None:
            return None
        if not request.is_websocket:
            await self._answer_http(reader, stream, request)
            return None
        ip, remote_addr = client_address(
            peer, request.values("x-forwarded-for"), self._config.trusts
        )
        refusal = self._check(request, ip, connection)
        if refusal is not None:
            reason, status, text = refusal
            self._refuse(reason)
            await reader.refuse(stream, status, text)
            return None
        return request, remote_addr

    def _check(
        self, request: HttpRequest, ip: str, connection: _Connection
    ) -> tuple[str, int, str] | None:
        """Why a handshake is refused as ``(reason, status, text)``; ``None`` when it may go
        on, and then the connection holds a slot against the limits."""
        config = self._config
        if not request.path.startswith(_WS_PREFIX):
            return "bad_request", 404, "not found"
        problem = request.websocket_problem()
        if problem is not None:
            return ("bad_request", *problem)
        origins = request.values("origin")
        if not origin_allowed(origins, request.header("host"), config.allowed_origins):
            return "origin", 403, "origin not allowed"
        if self._slots >= config.max_connections:
            return "full", 503, "too many connections"
        if self._per_ip.get(ip, 0) >= config.max_connections_per_ip:
            return "per_ip", 429, "too many connections from your address"
        self._slots += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        connection.ip = ip
        return None

    def _release(self, ip: str) -> None:
        self._slots -= 1
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]

    async def _answer_http(
        self, reader: RequestReader, stream: trio.abc.Stream, request: HttpRequest
    ) -> None:
        self._http_requests += 1
        route = self._routes.get(request.path)
        if request.path.startswith(_WS_PREFIX):
            status, text = request.websocket_problem() or (400, "not a WebSocket handshake")
            await reader.refuse(stream, status, text)
        elif route is None:
            await reader.refuse(stream, 404, "not found")
        elif request.method != "GET":
            await reader.refuse(stream, 405, "method not allowed")
        else:
            try:
                status, content_type, body = route(request.query)
            except Exception:
                logger.exception("HTTP route %s failed", request.path)
                status, content_type, body = 500, "text/plain", b"internal error\n"
            await reader.respond(stream, status, content_type, body)

    # ------------------------------------------------------------------ after the upgrade

    async def _session(
        self, ws: trio_websocket.WebSocketConnection, admission: Admission, link: _Link
    ) -> None:
        handle = self._hub.connect(admission, link)
        self._open += 1
        self._accepted += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, ws, link)
                with link.reader_scope:
                    await self._read(ws, handle)
                # Reading is over; the writer flushes what is queued, within the deadline.
                link.finish()
                nursery.cancel_scope.deadline = trio.current_time() + self._config.shutdown_timeout
        except Exception:
            logger.exception("WebSocket session failed")
            link.close(*_INTERNAL_ERROR)
        finally:
            self._open -= 1
            try:
                self._hub.disconnect(handle)
            finally:
                with trio.move_on_after(self._config.shutdown_timeout):
                    await ws.aclose(link.close_code or 1000, link.close_reason or None)

    async def _read(self, ws: trio_websocket.WebSocketConnection, handle: Any) -> None:
        hub = self._hub
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if isinstance(message, bytes):
                self._binary_frames += 1
                message = message.decode("utf-8", errors="replace")
            hub.message(handle, message)

    async def _write(self, ws: trio_websocket.WebSocketConnection, link: _Link) -> None:
        try:
            while (message := await link.next_message()) is not None:
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            link.reader_scope.cancel()  # nothing more can be written: the session is over


async def serve_websockets(
    hub: Hub,
    config: BrokerConfig,
    *,
    extra_routes: Mapping[str, Route] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the broker's WebSocket port (and its plain HTTP answers) until cancelled.

    Sets ``hub.front`` to the :class:`WebSocketFront` it runs, whose ``metrics_lines()`` the
    hub adds to ``/metrics``.

    Args:
        hub: The broker's state.
        config: ``ws_host``, ``ws_port`` (``0`` picks a free one), ``ssl_context`` and the
            limits and timeouts of the WebSocket side.
        extra_routes: More ``GET`` paths for plain HTTP (the demo page), each to a function
            returning ``(status, content type, body)``.
        task_status: ``started`` with the port bound (see ``nursery.start``).

    Raises:
        OSError: the port cannot be bound.

    Cancellation:
        On cancellation open WebSockets are closed with 1001 and ``hub.disconnect`` is
        called for each, within ``config.shutdown_timeout``; then ``Cancelled`` propagates.
    """
    front = WebSocketFront(hub, config, extra_routes=extra_routes)
    hub.front = front
    await front.serve(task_status=task_status)
