"""An in-memory broker for testing backends: the real broker's hub and backend links, with
simulated WebSocket clients instead of sockets.

Theory of operation: :class:`FakeBroker` runs the routing that ships. It holds a
:class:`~strands_trio.broker.Hub` and a :class:`~strands_trio.broker._backends.BackendServer`,
the same objects ``serve_broker`` runs, so admission, stickiness, the no-backend queue, rooms,
broadcasts, extensions (``close_connection``, ``presence``), flow control and bad-line handling
are the broker's own. Only the WebSocket port is replaced: :meth:`FakeBroker.connect` shapes a
handshake with the broker's own :func:`~strands_trio.broker._handshake.shape_handshake` (so
headers, url and remote address are exactly what a backend would hear) and hands it to
``hub.admit``; an accepted client is a :class:`FakeWebSocket`, the hub's client link, driven
from the test's task.

A backend reaches it through :meth:`FakeBroker.open_backend_stream` (a
``trio.testing.memory_stream_pair``; pass it as the client's ``connect=``) or over real TCP with
:meth:`FakeBroker.serve_tcp`. Every action a backend sends is recorded on its way to the hub.

``reference=True`` (the default) adds what the reference broker (pystrands-go v1.0.0) does
differently from strands-trio's broker, so that a backend meets in tests what it meets in
production there: contexts carry the nested metadata (WIRE.md quirk 1), and a rejected client is
upgraded, then closed (quirk 4; :class:`ConnectionRejected` has no HTTP status then). Both
brokers send a request-shaped ``error`` for a client that arrived while no backend was
connected (quirk 2) and queue other events until a backend connects (quirk 3). Unlike the
reference, each client's events go to the backend that accepted it while that backend stays
connected, so tests are deterministic (strands-trio's broker does the same).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import trio
import trio.testing

from .._util import running
from ..broker import BrokerConfig, Delivery, Hub
from ..broker._backends import BackendServer
from ..broker._handshake import select_subprotocol, shape_handshake
from ..broker._ports import BackendPort
from ..broker._refusals import NO_BACKEND, TIMED_OUT, close_reason
from ..protocol import (
    Action,
    BadFrame,
    Broadcast,
    Heartbeat,
    MessageToConnection,
    MessageToRoom,
    canonical_header,
    encode,
)

__all__ = ["ConnectionRejected", "FakeBroker", "FakeWebSocket", "open_fake_broker"]

_numbers = itertools.count(1)


class ConnectionRejected(Exception):
    """:meth:`FakeBroker.connect` did not get an accepted connection: the backend said no,
    raised, went away, did not answer in time, or no backend was connected.

    The message is the reason the client is told (the backend's own, or the broker's).

    Attributes:
        status: The HTTP status the handshake is answered with, or ``None`` when the socket
            was upgraded and then closed (see :attr:`close_code`). strands-trio's broker
            upgrades and closes for a backend's refusal by default (403 with
            ``refuse_with="http"``), and answers 503 with no backend or no answer in time. In
            reference mode, 200 with no backend, ``None`` for a rejection.
        close_code: The close code a browser sees when the socket was upgraded and closed:
            4401, 4403, 4000+N... from strands-trio's broker (``docs/browser-clients.md``),
            1006 from the reference (it closes without a close frame); ``None`` when the
            handshake was answered with an HTTP status (a browser sees 1006 then too).
    """

    def __init__(self, message: str, status: int | None, close_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.close_code = close_code


class FakeWebSocket:
    """A simulated WebSocket client of a :class:`FakeBroker`, accepted by a backend (the
    hub's client link for it).

    Attributes:
        client_id: The id the backend gave it.
        room_id: The room the backend put it in.
        metadata: The metadata the backend set.
        url: The ``url`` its connection request carried.
        headers: Its handshake headers, as the backend was told them.
        remote_addr: Its ``"ip:port"``.
        query: The query string its connection request carried (``query``).
        subprotocol: The subprotocol the broker selected from its ``Sec-WebSocket-Protocol``
            offer (``BrokerConfig.subprotocols``), or ``None``.
        close_code: Set when the broker closed it (a backend's ``close_connection``, or a
            newer client with the same id): the close code.
        close_reason: The close reason that came with :attr:`close_code`.
    """

    def __init__(self, broker: FakeBroker, admission: Any, handshake: Any) -> None:
        self.client_id: str = admission.client_id
        self.room_id: str = admission.room_id
        self.metadata: dict[str, Any] = admission.metadata
        self.url: str = handshake.url
        self.query: str = handshake.query
        self.subprotocol: str | None = None
        self.headers: dict[str, list[str]] = handshake.headers
        self.remote_addr: str = handshake.remote_addr
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._broker = broker
        self._client: Any = None
        self._inbox_send, self._inbox = trio.open_memory_channel[str](float("inf"))

    async def send(self, message: str) -> None:
        """Send a text message: the backend gets a ``new_message`` event (written to it by
        the time this returns).

        Raises:
            trio.ClosedResourceError: this client is closed.
        """
        if self.closed:
            raise trio.ClosedResourceError("this fake WebSocket is closed")
        hub = self._broker.hub
        if hub.message(self._client, message):
            await hub.wait_ready(self._client)
        await self._broker._written()

    async def receive(self) -> str:
        """The next message a backend sent to this client (private, room or broadcast).

        Raises:
            trio.EndOfChannel: the broker closed this client and every message sent before
                was received (see :attr:`close_code`).
        """
        return await self._inbox.receive()

    def receive_nowait(self) -> str:
        """Like :meth:`receive`, without waiting.

        Raises:
            trio.WouldBlock: nothing has arrived.
            trio.EndOfChannel: as :meth:`receive`.
        """
        return self._inbox.receive_nowait()

    async def close(self) -> None:
        """Leave: the backend gets a ``disconnected`` event. Closing twice does nothing."""
        if not self.closed:
            self.closed = True
            self._broker.hub.disconnect(self._client)
            self._inbox_send.close()
        await self._broker._written()


class _Link:
    """A :class:`FakeWebSocket` as the hub sees it: its client link."""

    __slots__ = ("ws",)

    def __init__(self, ws: FakeWebSocket) -> None:
        self.ws = ws

    def deliver(self, message: Delivery) -> bool:
        ws = self.ws
        if ws.closed:
            return False
        ws._inbox_send.send_nowait(message.text)
        return True

    def flush(self) -> None:
        """Nothing to write: delivered messages are in the inbox already."""

    def close(self, code: int, reason: str) -> None:
        """The broker closes the client, as the front would: then it has left."""
        ws = self.ws
        if ws.closed:
            return
        ws.closed = True
        ws.close_code, ws.close_reason = code, reason
        ws._inbox_send.close()
        ws._broker.hub.disconnect(ws._client)


class _Recorder:
    """In front of the hub: records every action a backend sends, then passes it on."""

    def __init__(self, hub: Hub, actions: list[Action]) -> None:
        self._hub = hub
        self._actions = actions

    def add_backend(self, backend: BackendPort) -> None:
        self._hub.add_backend(backend)

    def remove_backend(self, backend: BackendPort) -> None:
        self._hub.remove_backend(backend)

    def on_actions(self, backend: BackendPort, actions: list[Action]) -> None:
        self._actions.extend(actions)
        self._hub.on_actions(backend, actions)


_HANDSHAKE = ("Connection", "Upgrade", "Sec-Websocket-Version", "Sec-Websocket-Key")


class FakeBroker:
    """An in-memory PyStrands broker for testing a backend (see the module docstring).

    Args:
        reference: Behave like the reference broker where it differs from strands-trio's
            (nested metadata, rejected clients upgraded then closed, no timeout on
            connection requests, extension actions ignored); ``False`` behaves like
            strands-trio's broker.
        queue_size: Events kept while no backend is connected (oldest dropped first).
        heartbeat_interval: Seconds between heartbeats to every backend, or ``None`` for none
            (then :meth:`send_heartbeat` sends one on demand).
        request_timeout: Seconds a backend has to answer a connection request; by default
            none in reference mode (the reference waits forever), else strands-trio's
            broker's default (10 s).
        pass_query_string: Also glue the query string to the ``url`` of connection requests
            (the query travels in the ``query`` field anyway, except in reference mode).
        refuse_with: How strands-trio's broker tells a refused client (``BrokerConfig.
            refuse_with``): ``"close"`` (close codes, the default) or ``"http"``; see
            :class:`ConnectionRejected`. Ignored in reference mode.

    Use it with :func:`open_fake_broker`, or start it yourself with
    ``await nursery.start(broker.serve)``::

        async with open_fake_broker() as broker:
            async with MyBackend(connect=broker.open_backend_stream).connected():
                alice = await broker.connect("/ws/chat", headers={"Authorization": "Bearer x"})
                await alice.send("hello")
                assert await alice.receive() == "echo: hello"
    """

    def __init__(
        self,
        *,
        reference: bool = True,
        queue_size: int = 1000,
        heartbeat_interval: float | None = 15.0,
        request_timeout: float | None = None,
        pass_query_string: bool = False,
        refuse_with: Literal["close", "http"] = "close",
    ) -> None:
        self.reference = reference
        if request_timeout is None and not reference:  # the reference waits forever (quirk 5)
            request_timeout = BrokerConfig().request_timeout
        self.config = BrokerConfig(
            ws_port=0,
            tcp_port=0,
            queue_size=queue_size,
            heartbeat_interval=heartbeat_interval,
            request_timeout=request_timeout,
            pass_query_string=pass_query_string,
            refuse_with=refuse_with,
        )
        #: The broker's own :class:`~strands_trio.broker.Hub` (the routing that ships).
        self.hub = Hub(self.config, reference=reference)
        #: Every action a backend sent, decoded, in order of arrival.
        self.actions: list[Action] = []
        #: Lines from backends that were not valid frames (skipped, as the reference does).
        self.bad_frames: list[BadFrame] = []
        self._backends = BackendServer(
            _Recorder(self.hub, self.actions),
            self.config,
            on_bad_frame=self.bad_frames.append,
            hello=not reference,  # the reference broker says nothing of itself
        )
        #: While true, new backend connections are refused (``ConnectionRefusedError``).
        self.refuse_backends = False
        #: ``trio.current_time()`` of every backend connection attempt, refused ones included.
        self.connection_attempts: list[float] = []
        self._ports = itertools.count(50000)
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ running

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker's tasks (one per backend link) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def serve_tcp(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept backends over real TCP on *host*:*port* until cancelled; ``nursery.start``
        returns the port (useful with ``port=0``). :meth:`serve` must be running."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._accept_tcp, listeners)

    async def _accept_tcp(self, stream: trio.SocketStream) -> None:
        self.connection_attempts.append(trio.current_time())
        if self.refuse_backends:
            await stream.aclose()
            return
        await self._backends.serve_link(stream, f"tcp#{next(_numbers)}")

    async def open_backend_stream(self) -> trio.abc.Stream:
        """Connect a backend in memory: pass this method as a client's ``connect=``.

        Raises:
            ConnectionRefusedError: :attr:`refuse_backends` is set.
            RuntimeError: the broker is not running.
        """
        if self._nursery is None:
            raise RuntimeError(
                "the FakeBroker is not running: use open_fake_broker(), "
                "or await nursery.start(broker.serve) first"
            )
        self.connection_attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.refuse_backends:
            raise ConnectionRefusedError("the fake broker refuses backend connections")
        backend_end, broker_end = trio.testing.memory_stream_pair()
        await self._nursery.start(self._backends.serve_link, broker_end, f"memory#{next(_numbers)}")
        return backend_end

    # ------------------------------------------------------------------ what backends did

    def room_messages(self, room_id: str) -> list[str]:
        """Every message a backend sent to *room_id*, in order."""
        return [
            a.message for a in self.actions if type(a) is MessageToRoom and a.room_id == room_id
        ]

    def private_messages(self, client_id: str) -> list[str]:
        """Every message a backend sent to the client *client_id*, in order."""
        return [
            a.message
            for a in self.actions
            if type(a) is MessageToConnection and a.conn_id == client_id
        ]

    @property
    def broadcasts(self) -> list[str]:
        """Every message a backend broadcast, in order."""
        return [a.message for a in self.actions if type(a) is Broadcast]

    @property
    def backend_count(self) -> int:
        """Backends connected (and ready) now."""
        return self.hub.backend_count

    @property
    def backend_connections(self) -> int:
        """Backend connections made ready so far."""
        return self._backends.statistics().connected

    @property
    def dropped_events(self) -> int:
        """Events dropped because the no-backend queue was full."""
        return self.hub.statistics().queue_dropped

    @property
    def unknown_targets(self) -> int:
        """Actions naming a client, room or request that does not exist (ignored)."""
        return self.hub.statistics().unknown_targets

    async def wait_backends(self, count: int = 1) -> None:
        """Wait until exactly *count* backends are connected."""
        while self.hub.backend_count != count:
            await self.hub.wait_changed()

    # ------------------------------------------------------------------ WebSocket clients

    async def connect(
        self,
        url: str = "/ws/",
        *,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        remote_addr: str | None = None,
    ) -> FakeWebSocket:
        """Simulate a WebSocket client connecting to *url*: a ``connection_request`` goes to a
        backend, shaped as the broker shapes it, and this waits for the answer.

        Args:
            url: The request target (``/ws/...?query``): the path goes in ``url``, the query
                string in ``query`` (not in reference mode), as the broker sends them.
            headers: Handshake headers (a value or a list of values each), after the usual
                WebSocket handshake headers (which a header of the same name replaces).
            remote_addr: The client's ``"ip:port"``; a distinct loopback one by default.

        Raises:
            ConnectionRejected: the backend rejected the client, raised, went away before
                answering, did not answer in time, or no backend was connected (then an
                ``error`` event is queued for the next backend, as both brokers do).
        """
        given = {canonical_header(name): value for name, value in (headers or {}).items()}
        pairs: list[tuple[str, str]] = []
        defaults = ("Upgrade", "websocket", "13", base64.b64encode(os.urandom(16)).decode())
        for name, value in zip(_HANDSHAKE, defaults, strict=True):
            if name not in given:
                pairs.append((name, value))
        for name, values in given.items():
            pairs.extend((name, item) for item in ([values] if isinstance(values, str) else values))
        handshake = shape_handshake(
            pairs,
            url,
            remote_addr or f"127.0.0.1:{next(self._ports)}",
            pass_query_string=self.config.pass_query_string,
        )
        admission = await self.hub.admit(handshake)
        if not admission.accepted:
            await self._written()
            raise self._rejected(admission)
        ws = FakeWebSocket(self, admission, handshake)
        offered = [
            name.strip()
            for value in handshake.headers.get("Sec-Websocket-Protocol", ())
            for name in value.split(",")
        ]
        ws.subprotocol = select_subprotocol(offered, self.config.subprotocols)
        ws._client = self.hub.connect(admission, _Link(ws))
        await self._written()
        return ws

    def _rejected(self, admission: Any) -> ConnectionRejected:
        """How the broker answers a refused handshake (``_front.py``), or the reference."""
        if self.reference:  # WIRE.md quirk 4: upgraded then closed, or 200 with no backend
            if admission.close_code in (NO_BACKEND, TIMED_OUT):
                return ConnectionRejected(
                    admission.reason, 200 if self.hub.backend_count == 0 else 503
                )
            return ConnectionRejected(admission.reason, None, 1006)
        if self.config.refuse_with == "http" or admission.status == 503:  # as _front.py
            return ConnectionRejected(admission.reason, admission.status)
        return ConnectionRejected(close_reason(admission.reason), None, admission.close_code)

    # ------------------------------------------------------------------ sending to backends

    async def _written(self) -> None:
        await self._backends.flush()

    async def send_heartbeat(self) -> None:
        """Send a heartbeat to every connected backend."""
        self._backends.send_to_all(encode(Heartbeat()))
        await self._written()

    async def send_raw(self, data: bytes) -> None:
        """Write *data* as it is to every connected backend (for malformed-input tests)."""
        self._backends.send_to_all(data)
        await self._written()

    async def drop_backends(self) -> None:
        """Close every backend connection, as a broker that goes away does."""
        self._backends.disconnect_all()  # each link's task then closes its stream
        await trio.lowlevel.checkpoint()

    @property
    def instance(self) -> str:
        """The instance id in the ``hello`` frame that opens each backend link (none is sent
        in reference mode)."""
        return self._backends.instance

    async def restart(self) -> None:
        """Act as a broker that was killed and started again: every backend connection is
        closed at once, and the next ones get a ``hello`` with a new :attr:`instance`. (The
        WebSocket clients of this fake stay; a real restart loses them.)"""
        self._backends.new_instance()
        await self.drop_backends()


@contextlib.asynccontextmanager
async def open_fake_broker(
    *,
    reference: bool = True,
    queue_size: int = 1000,
    heartbeat_interval: float | None = 15.0,
    request_timeout: float | None = None,
    pass_query_string: bool = False,
    refuse_with: Literal["close", "http"] = "close",
) -> AsyncIterator[FakeBroker]:
    """A running :class:`FakeBroker` for the duration of the block (arguments as its own)."""
    broker = FakeBroker(
        reference=reference,
        queue_size=queue_size,
        heartbeat_interval=heartbeat_interval,
        request_timeout=request_timeout,
        pass_query_string=pass_query_string,
        refuse_with=refuse_with,
    )
    async with running(broker.serve):
        yield broker
