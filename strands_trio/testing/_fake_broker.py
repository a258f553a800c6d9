"""An in-memory broker for testing backends, faithful to the reference broker's behaviour.

Theory of operation: :class:`FakeBroker` keeps the broker's state (backend links, WebSocket
clients, rooms, the queue used while no backend is connected) and speaks the wire protocol with
the same sans-IO codec as the client. A backend reaches it through
:meth:`FakeBroker.open_backend_stream` (a ``trio.testing.memory_stream_pair``; pass it as the
client's ``connect=``) or over real TCP with :meth:`FakeBroker.serve_tcp`. Each link gets a
reader task in the broker's nursery, which decodes the backend's actions and routes them to
:class:`FakeWebSocket` inboxes. Simulated WebSocket clients are driven from the test's own
task: :meth:`FakeBroker.connect` sends a ``connection_request`` and waits for the answer.

By default it behaves like the reference broker (pystrands-go v1.0.0), quirks included, so a
backend tested against it meets what it will meet in production: contexts carry the nested
metadata (quirk 1), a client arriving while no backend is connected is refused and an ``error``
with the request as its context is queued (quirk 2), and events are queued while no backend is
connected and flushed to the next one (quirk 3). Unlike the reference, each WebSocket client is
pinned to the backend that accepted it while that backend stays connected, so tests are
deterministic.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import trio
import trio.testing

from .._util import running
from ..broker._http import canonical_header
from ..broker._hub import NO_BACKEND
from ..context import ConnectionRequestContext, Context
from ..protocol import (
    Action,
    BadFrame,
    Broadcast,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    Event,
    FrameDecoder,
    Heartbeat,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    NewMessage,
    Response,
    Role,
    encode,
)

__all__ = ["ConnectionRejected", "FakeBroker", "FakeWebSocket", "open_fake_broker"]


class ConnectionRejected(Exception):
    """:meth:`FakeBroker.connect` did not get an accepted connection: the backend said no,
    raised, went away, or no backend was connected."""


@attrs.define(eq=False)
class _Link:
    """The broker's end of one backend connection."""

    stream: trio.abc.Stream
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    alive: bool = True

    async def send(self, frame: Event) -> None:
        async with self.lock:
            await self.stream.send_all(encode(frame))


@attrs.define(eq=False)
class _Pending:
    link: _Link
    done: trio.Event = attrs.field(factory=trio.Event)
    response: Response | None = None


class FakeWebSocket:
    """A simulated WebSocket client of a :class:`FakeBroker`, accepted by a backend.

    Attributes:
        client_id: The id the backend gave it.
        room_id: The room the backend put it in.
        metadata: The metadata the backend set (unwrapped, whatever the broker sends).
        url: The path it connected to.
        headers: Its handshake headers, as sent (canonical names, lists of values).
        remote_addr: Its ``"ip:port"``.
    """

    def __init__(
        self,
        broker: FakeBroker,
        request: ConnectionRequest,
        response: Response,
        link: _Link,
    ) -> None:
        assert response.client_id is not None
        assert response.room_id is not None
        self.client_id: str = response.client_id
        self.room_id: str = response.room_id
        self.metadata: dict[str, Any] = response.metadata or {}
        self.url = request.url
        self.headers = request.headers
        self.remote_addr = request.remote_addr
        self.closed = False
        self._broker = broker
        self._link = link
        if broker.nested_metadata:  # WIRE.md quirk 1: the whole response params
            self._wire_metadata = _response_params(response)
        else:
            self._wire_metadata = self.metadata
        self._inbox_send, self._inbox = trio.open_memory_channel[str](float("inf"))

    def _context(self) -> Context:
        return Context(client_id=self.client_id, room_id=self.room_id, metadata=self._wire_metadata)

    async def send(self, message: str) -> None:
        """Send a text frame: the backend gets a ``new_message`` event."""
        if self.closed:
            raise trio.ClosedResourceError("this fake WebSocket is closed")
        await self._broker._deliver(
            NewMessage(request_id=_rid(), context=self._context(), message=message), self
        )

    async def receive(self) -> str:
        """The next message a backend sent to this client (private, room or broadcast)."""
        return await self._inbox.receive()

    def receive_nowait(self) -> str:
        """Like :meth:`receive`, without waiting.

        Raises:
            trio.WouldBlock: nothing has arrived.
        """
        return self._inbox.receive_nowait()

    async def close(self) -> None:
        """Leave: the backend gets a ``disconnected`` event. Closing twice does nothing."""
        if self.closed:
            return
        self.closed = True
        self._broker._forget(self)
        await self._broker._deliver(Disconnected(request_id=_rid(), context=self._context()), self)

    def _push(self, message: str) -> None:
        if not self.closed:
            self._inbox_send.send_nowait(message)


def _response_params(response: Response) -> dict[str, Any]:
    """The ``params`` object of an accepted response, as the reference broker keeps it."""
    params: dict[str, Any] = {
        "accepted": True,
        "client_id": response.client_id,
        "room_id": response.room_id,
    }
    if response.metadata is not None:
        params["metadata"] = response.metadata
    return params


def _rid() -> str:
    return str(uuid.uuid4())


class FakeBroker:
    """An in-memory PyStrands broker for testing a backend (see the module docstring).

    Args:
        nested_metadata: Send contexts with the reference broker's nested metadata (WIRE.md
            quirk 1). ``False`` sends the metadata the backend set, as strands-trio's broker.
        queue_size: Events kept while no backend is connected (oldest dropped first).
        heartbeat_interval: Seconds between heartbeats to every backend, or ``None`` for none
            (then :meth:`send_heartbeat` sends one on demand).

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
        nested_metadata: bool = True,
        queue_size: int = 1000,
        heartbeat_interval: float | None = 15.0,
    ) -> None:
        self.nested_metadata = nested_metadata
        self.heartbeat_interval = heartbeat_interval
        #: While true, new backend connections are refused (``ConnectionRefusedError``).
        self.refuse_backends = False
        #: Every action a backend sent, decoded, in order of arrival.
        self.actions: list[Action] = []
        #: Lines from backends that were not valid frames (skipped, as the reference does).
        self.bad_frames: list[BadFrame] = []
        #: ``trio.current_time()`` of every backend connection attempt, refused ones included.
        self.connection_attempts: list[float] = []
        #: Backend connections accepted so far.
        self.backend_connections = 0
        #: Events dropped because the no-backend queue was full.
        self.dropped_events = 0
        #: Actions naming a client or request that does not exist (ignored, as the reference).
        self.unknown_targets = 0
        self._links: list[_Link] = []
        self._round_robin = itertools.count()
        self._clients: dict[str, FakeWebSocket] = {}
        self._pending: dict[str, _Pending] = {}
        self._queue: deque[Event] = deque(maxlen=queue_size)
        self._room_messages: defaultdict[str, list[str]] = defaultdict(list)
        self._private_messages: defaultdict[str, list[str]] = defaultdict(list)
        self._broadcasts: list[str] = []
        self._ports = itertools.count(50000)
        self._nursery: trio.Nursery | None = None
        self._backends_changed = trio.Event()

    # ------------------------------------------------------------------ running

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker's tasks (backend readers, heartbeats) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.heartbeat_interval is not None:
                nursery.start_soon(self._heartbeats, self.heartbeat_interval)
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
        link = await self._add_link(stream)
        await self._read_backend(link)

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
        link = await self._add_link(broker_end)
        self._nursery.start_soon(self._read_backend, link)
        return backend_end

    async def _add_link(self, stream: trio.abc.Stream) -> _Link:
        self.backend_connections += 1
        link = _Link(stream)
        self._links.append(link)
        self._notify_backends_changed()
        queued, self._queue = list(self._queue), deque(maxlen=self._queue.maxlen)
        for position, event in enumerate(queued):  # WIRE.md quirk 3: flushed in order
            if not await self._send_to(link, event):
                self._queue.extendleft(reversed(queued[position:]))  # keep them for the next
                break
        return link

    async def _read_backend(self, link: _Link) -> None:
        decoder = FrameDecoder(Role.BROKER)
        try:
            while True:
                try:
                    data = await link.stream.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                for frame in decoder.feed(data):
                    if type(frame) is BadFrame:
                        self.bad_frames.append(frame)
                    else:
                        self._on_action(frame)  # type: ignore[arg-type]
        finally:
            self._drop_link(link)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(link.stream)

    def _drop_link(self, link: _Link) -> None:
        if not link.alive:
            return
        link.alive = False
        self._links.remove(link)
        for pending in self._pending.values():
            if pending.link is link:
                pending.done.set()  # no response: the request fails
        self._notify_backends_changed()

    def _notify_backends_changed(self) -> None:
        self._backends_changed.set()
        self._backends_changed = trio.Event()

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await self.send_heartbeat()

    # ------------------------------------------------------------------ backends' actions

    def _on_action(self, action: Action) -> None:
        self.actions.append(action)
        if type(action) is Response:
            pending = self._pending.get(action.request_id)
            if pending is None:
                self.unknown_targets += 1
                return
            pending.response = action
            pending.done.set()
        elif type(action) is MessageToRoom:
            self._room_messages[action.room_id].append(action.message)
            for ws in list(self._clients.values()):
                if ws.room_id == action.room_id:
                    ws._push(action.message)
        elif type(action) is MessageToConnection:
            self._private_messages[action.conn_id].append(action.message)
            target = self._clients.get(action.conn_id)
            if target is None:
                self.unknown_targets += 1
            else:
                target._push(action.message)
        elif type(action) is Broadcast:
            self._broadcasts.append(action.message)
            for ws in list(self._clients.values()):
                ws._push(action.message)

    def room_messages(self, room_id: str) -> list[str]:
        """Every message a backend sent to *room_id*, in order."""
        return list(self._room_messages.get(room_id, ()))

    def private_messages(self, client_id: str) -> list[str]:
        """Every message a backend sent to the client *client_id*, in order."""
        return list(self._private_messages.get(client_id, ()))

    @property
    def broadcasts(self) -> list[str]:
        """Every message a backend broadcast, in order."""
        return list(self._broadcasts)

    @property
    def backend_count(self) -> int:
        """Backends connected now."""
        return len(self._links)

    async def wait_backends(self, count: int = 1) -> None:
        """Wait until exactly *count* backends are connected."""
        while len(self._links) != count:
            await self._backends_changed.wait()

    # ------------------------------------------------------------------ WebSocket clients

    async def connect(
        self,
        url: str = "/ws/",
        *,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        remote_addr: str | None = None,
    ) -> FakeWebSocket:
        """Simulate a WebSocket client connecting to *url*: send a ``connection_request`` to a
        backend and wait for its answer.

        Args:
            url: The request path, as the broker passes it (``/ws/...``, no query string).
            headers: Handshake headers (a value or a list of values each); names are sent in
                Go's canonical form, after the usual WebSocket handshake headers.
            remote_addr: The client's ``"ip:port"``; a distinct loopback one by default.

        Raises:
            ConnectionRejected: the backend rejected the client, raised, went away before
                answering, or no backend was connected (then an ``error`` event is queued for
                the next backend, as the reference broker does).
        """
        wire_headers = {
            "Connection": ["Upgrade"],
            "Upgrade": ["websocket"],
            "Sec-Websocket-Version": ["13"],
            "Sec-Websocket-Key": [base64.b64encode(os.urandom(16)).decode()],
        }
        for name, value in (headers or {}).items():
            wire_headers[canonical_header(name)] = (
                [value] if isinstance(value, str) else list(value)
            )
        remote_addr = remote_addr or f"127.0.0.1:{next(self._ports)}"
        link = self._pick_link()
        if link is None:
            request_context = ConnectionRequestContext(
                headers=wire_headers, url=url, remote_addr=remote_addr, accepted=False
            )
            self._enqueue(ErrorEvent(request_id=_rid(), error=NO_BACKEND, context=request_context))
            raise ConnectionRejected(NO_BACKEND)
        request = ConnectionRequest(
            request_id=_rid(), headers=wire_headers, url=url, remote_addr=remote_addr
        )
        pending = self._pending[request.request_id] = _Pending(link)
        try:
            if await self._send_to(link, request):  # a failure sets done, without a response
                await pending.done.wait()
        finally:
            del self._pending[request.request_id]
        response = pending.response
        if response is None:
            raise ConnectionRejected("the backend went away before answering")
        if not response.accepted:
            raise ConnectionRejected("the backend rejected the connection")
        ws = FakeWebSocket(self, request, response, link)
        self._clients[ws.client_id] = ws
        await self._deliver(NewConnection(request_id=_rid(), context=ws._context()), ws)
        return ws

    def _forget(self, ws: FakeWebSocket) -> None:
        if self._clients.get(ws.client_id) is ws:
            del self._clients[ws.client_id]

    # ------------------------------------------------------------------ sending events

    async def send_heartbeat(self) -> None:
        """Send a heartbeat to every connected backend."""
        for link in list(self._links):
            await self._send_to(link, Heartbeat())

    async def send_raw(self, data: bytes) -> None:
        """Write *data* as it is to every connected backend (for malformed-input tests)."""
        for link in list(self._links):
            async with link.lock:
                await link.stream.send_all(data)

    async def drop_backends(self) -> None:
        """Close every backend connection, as a broker that goes away does."""
        for link in list(self._links):
            self._drop_link(link)
            await trio.aclose_forcefully(link.stream)

    def _pick_link(self) -> _Link | None:
        if not self._links:
            return None
        return self._links[next(self._round_robin) % len(self._links)]

    async def _deliver(self, event: Event, ws: FakeWebSocket) -> None:
        link = ws._link if ws._link.alive else self._pick_link()
        if link is None:
            self._enqueue(event)
            return
        ws._link = link
        if not await self._send_to(link, event):
            await self._deliver(event, ws)  # to another backend, or the queue

    async def _send_to(self, link: _Link, event: Event) -> bool:
        """Send *event* to *link*; if the link is broken, drop it and return False."""
        try:
            await link.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._drop_link(link)
            return False
        return True

    def _enqueue(self, event: Event) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped_events += 1
        self._queue.append(event)


@contextlib.asynccontextmanager
async def open_fake_broker(
    *,
    nested_metadata: bool = True,
    queue_size: int = 1000,
    heartbeat_interval: float | None = 15.0,
) -> AsyncIterator[FakeBroker]:
    """A running :class:`FakeBroker` for the duration of the block (arguments as its own)."""
    broker = FakeBroker(
        nested_metadata=nested_metadata,
        queue_size=queue_size,
        heartbeat_interval=heartbeat_interval,
    )
    async with running(broker.serve):
        yield broker
