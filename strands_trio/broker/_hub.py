"""The broker's state: clients, rooms, backends, the queue, and how events are routed.

Theory of operation. The hub is what the WebSocket front (``_websocket.py``) and the backend
links (``_backends.py``) share; all of it runs in one Trio thread, so no locks: every method
that does not ``await`` is atomic.

- A WebSocket handshake becomes :meth:`Hub.admit`: a ``connection_request`` goes to a live
  backend (round robin) and the handshake waits for its ``response``, at most
  ``request_timeout`` seconds. With no backend, the answer is 503 at once and an ``error``
  event carrying the request is queued for the next backend (as the reference does).
- An accepted client is :meth:`Hub.connect`-ed under the ``client_id`` the backend chose, in the
  room it chose, *pinned* to that backend: all its later events go there while that backend
  is connected, so one client's events keep their order end to end. When its backend leaves,
  the client is pinned to the next live backend on its next event.
- With no live backend at all, events other than connection requests wait in a bounded queue
  (oldest dropped first, counted and logged), flushed in order to the next backend.
- Actions from backends (:meth:`Hub.on_action`) deliver text to clients through their
  :class:`ClientLink`, whose bounded queue never blocks the hub: a client that cannot keep up
  is closed by its link.
- A broker in a cluster (``BrokerConfig.redis_url``) runs a :class:`~._cluster.ClusterHub`,
  this hub's subclass, which also carries actions to the other nodes (``_cluster.py``); this
  class knows nothing of Redis.
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson
import trio

from ..context import ConnectionRequestContext, Context
from ..protocol import (
    Action,
    Broadcast,
    BrokerMember,
    CloseConnection,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    PresenceReply,
    PresenceRequest,
    Response,
    encode,
    encode_new_message,
)
from ._config import BrokerConfig
from ._prometheus import counter, gauge, render

if TYPE_CHECKING:
    from ._backends import BackendLink

__all__ = [
    "NO_BACKEND",
    "Admission",
    "BrokerStatistics",
    "ClientLink",
    "ClusterStatistics",
    "Hub",
]

logger = logging.getLogger("strands_trio.broker")


class ClientLink(Protocol):
    """The hub's handle on one connected WebSocket client, provided by the WebSocket front."""

    def deliver(self, message: str) -> bool:
        """Queue *message* for the client without blocking; ``False`` if its queue is full
        (the link then closes the client with 1008 by itself)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close the client's socket with *code* and *reason*, without blocking."""
        ...


@attrs.frozen(kw_only=True)
class Admission:
    """A backend's answer to a WebSocket handshake (:meth:`Hub.admit`).

    Attributes:
        accepted: Whether the client may connect.
        status: When refused: the HTTP status to answer the handshake with: 403 (rejected by
            the backend), 503 (no backend, timeout, backend gone, or the broker is full).
        client_id: The id the backend gave the client (when accepted).
        room_id: The room the backend put it in (when accepted).
        metadata: What later events carry in their context (when accepted).
        backend: The backend that answered: the client's events go there (opaque).
    """

    accepted: bool
    status: int = 200
    client_id: str = ""
    room_id: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict)
    backend: Any = None


NO_BACKEND = "no backend available to handle connection request"


class _Client:
    """One connected WebSocket client, as the hub keeps it."""

    __slots__ = ("backend", "client_id", "context", "context_json", "link", "room_id")

    def __init__(self, admission: Admission, link: ClientLink) -> None:
        self.client_id = admission.client_id
        self.room_id = admission.room_id
        # The context every event of this client carries: the metadata exactly as the
        # backend set it (not the reference's nested copy of the whole response).
        self.context = Context(
            client_id=admission.client_id, room_id=admission.room_id, metadata=admission.metadata
        )
        self.context_json = orjson.dumps(self.context.to_json()).decode()
        self.link = link
        self.backend: BackendLink | None = admission.backend


class _Pending:
    __slots__ = ("backend", "done", "response")

    def __init__(self, backend: BackendLink) -> None:
        self.backend = backend
        self.done = trio.Event()
        self.response: Response | None = None


@attrs.frozen(kw_only=True)
class BrokerStatistics:
    """A snapshot of what a broker's hub holds and has counted (:meth:`Hub.statistics`)."""

    #: At this moment, WebSocket clients, rooms, ready backends, queued events, unanswered
    #: requests.
    connections: int
    rooms: int
    backends: int
    queued: int
    pending_requests: int
    #: Connection requests sent to a backend, accepted, rejected, timed out, refused for want
    #: of a backend, and acceptances without ids (refused).
    requests: int
    accepted: int
    rejected: int
    timed_out: int
    no_backend: int
    bad_responses: int
    #: Messages from clients, deliveries to clients, events queued and dropped from the queue.
    messages_in: int
    messages_out: int
    events_queued: int
    queue_dropped: int
    #: Actions for unknown clients, rooms or requests; undecodable backend lines; clients
    #: closed because another took their id.
    unknown_targets: int
    bad_frames: int
    replaced: int
    #: Backend connections made ready, refused (secret), dropped for not reading.
    backends_connected: int
    backends_refused: int
    backends_stalled: int
    #: In a cluster, this node's figures about it, else ``None``.
    cluster: ClusterStatistics | None = None


@attrs.frozen(kw_only=True)
class ClusterStatistics:
    """A broker node's figures about its cluster (``BrokerStatistics.cluster``).

    Attributes:
        node: This node's id.
        redis_available: Whether the command connection to Redis is up now.
        subscriber_available: Whether the subscriber connection is up (and subscribed).
        published: Messages published for other nodes (room messages, broadcasts, private
            messages and closes for clients on other nodes).
        received: Messages received from other nodes.
        lost: Messages for other nodes that could not be published: Redis unreachable, the
            connection lost with them in flight, or the queue to Redis full.
        dropped: Messages from other nodes dropped because this node fell behind.
        unknown_targets: Private messages and closes for a client no live node has.
        queued: Commands waiting to be sent to Redis now.
        resyncs: Times this node registered its clients again (start, Redis back).
        swept_nodes: Dead nodes whose registrations this node deleted.
        replaced: Clients of another node closed because their id connected here.
        bad_messages: Messages on the cluster's channels that could not be understood.
        forwarded_events: Events of this node's clients sent to another node's backends
            (this node has none).
    """

    node: str
    redis_available: bool
    subscriber_available: bool
    published: int
    received: int
    lost: int
    dropped: int
    unknown_targets: int
    queued: int
    resyncs: int
    swept_nodes: int
    replaced: int
    bad_messages: int
    forwarded_events: int


class Counters:
    """What the hub counts: the mutable part behind :class:`BrokerStatistics`."""

    def __init__(self) -> None:
        self.requests = self.accepted = self.rejected = self.timed_out = self.no_backend = 0
        self.messages_in = self.messages_out = self.events_queued = self.queue_dropped = 0
        self.unknown_targets = self.bad_frames = self.bad_responses = self.replaced = 0
        self.backends_connected = self.backends_refused = self.backends_stalled = 0


class Hub:
    """The state shared by the WebSocket front and the backend links (see the module's theory
    of operation).

    Args:
        config: The broker's settings.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        #: This broker's node id (``config.node_id``, or a random one).
        self.node_id: str = config.node_id or secrets.token_hex(4)
        self.counters = Counters()
        self._clients: dict[str, _Client] = {}
        self._rooms: dict[str, dict[_Client, None]] = {}
        self._backends: list[BackendLink] = []
        self._turn = 0
        self._pending: dict[str, _Pending] = {}
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._ids = itertools.count()
        self._links: set[BackendLink] = set()  # every backend connection, ready or not
        self._links_changed = trio.Event()
        #: The WebSocket front's own figures for ``/metrics`` (``metrics_lines()``), set by it.
        self.front: Any = None

    # ------------------------------------------------------------------ WebSocket side

    async def admit(self, headers: dict[str, list[str]], url: str, remote_addr: str) -> Admission:
        """Ask a backend whether this WebSocket client may connect, and where it goes.

        Waits for the answer at most ``config.request_timeout`` seconds. Never raises for a
        backend's failings: no backend, a timeout, a backend leaving before it answered or an
        unusable answer are all refusals, with the HTTP status to send.
        """
        self.counters.requests += 1
        request_id = str(uuid.uuid4())
        backend = self._pick()
        if backend is None:
            self.counters.no_backend += 1
            request = ConnectionRequestContext(
                headers=headers, url=url, remote_addr=remote_addr, accepted=False
            )
            self._enqueue(
                encode(ErrorEvent(request_id=request_id, error=NO_BACKEND, context=request))
            )
            logger.warning("no backend to ask about %s: refused with 503", remote_addr)
            return Admission(accepted=False, status=503)
        pending = self._pending[request_id] = _Pending(backend)
        try:
            backend.send(
                encode(
                    ConnectionRequest(
                        request_id=request_id, headers=headers, url=url, remote_addr=remote_addr
                    )
                )
            )
            with trio.move_on_after(self.config.request_timeout) as timer:
                await pending.done.wait()
        finally:
            del self._pending[request_id]
        response = pending.response
        if response is None and timer.cancelled_caught:  # an answer in the last tick counts
            self.counters.timed_out += 1
            logger.warning(
                "backend %s did not answer %s within %g s: refused with 503",
                backend.name,
                remote_addr,
                self.config.request_timeout,
            )
            return Admission(accepted=False, status=503)
        if response is None:  # the backend left before answering
            return Admission(accepted=False, status=503)
        if not response.accepted:
            self.counters.rejected += 1
            return Admission(accepted=False, status=403)
        if not (response.client_id and response.room_id):
            # The reference broker drops such a client too; refuse it and say why.
            self.counters.bad_responses += 1
            logger.warning(
                "backend %s accepted %s without client_id and room_id", backend.name, remote_addr
            )
            return Admission(accepted=False, status=403)
        self.counters.accepted += 1
        return Admission(
            accepted=True,
            client_id=response.client_id,
            room_id=response.room_id,
            metadata=response.metadata or {},
            backend=backend if backend.alive else None,
        )

    def connect(self, admission: Admission, link: ClientLink) -> _Client:
        """Register an accepted client once its socket is open; its backend is told with a
        ``new_connection`` event. A client already connected under the same id is closed
        (1008): ids are the backend's to keep unique, and messages to an id must reach one
        socket."""
        client = _Client(admission, link)
        previous = self._clients.get(client.client_id)
        if previous is not None:
            self.counters.replaced += 1
            logger.warning(
                "client id %r connected again: closing its older socket", client.client_id
            )
            self._forget(previous)
            previous.link.close(1008, "replaced by a new connection with the same client id")
        self._clients[client.client_id] = client
        self._rooms.setdefault(client.room_id, {})[client] = None
        self._event(
            client, encode(NewConnection(request_id=self._next_id(), context=client.context))
        )
        return client

    def message(self, client: _Client, text: str) -> None:
        """A client sent *text*: a ``new_message`` event to its backend."""
        self.counters.messages_in += 1
        self._event(
            client,
            encode_new_message(self._next_id(), client.context_json, text),
        )

    def disconnect(self, client: _Client) -> None:
        """A client's socket closed: forget it, and send its backend ``disconnected``."""
        if self._forget(client):
            self._event(
                client, encode(Disconnected(request_id=self._next_id(), context=client.context))
            )

    def _forget(self, client: _Client) -> bool:
        if self._clients.get(client.client_id) is not client:
            return False
        del self._clients[client.client_id]
        room = self._rooms.get(client.room_id)
        if room is not None:
            room.pop(client, None)
            if not room:
                del self._rooms[client.room_id]
        return True

    # ------------------------------------------------------------------ routing events

    def _next_id(self) -> str:
        return f"e{next(self._ids)}"

    def _pick(self) -> BackendLink | None:
        backends = self._backends
        if not backends:
            return None
        self._turn = (self._turn + 1) % len(backends)
        return backends[self._turn]

    def _event(self, client: _Client, data: bytes) -> None:
        backend = client.backend
        if backend is None or not backend.alive:
            backend = client.backend = self._pick()
        if backend is None:
            self._enqueue(data)
        else:
            backend.send(data)

    def _enqueue(self, data: bytes) -> None:
        queue = self._queue
        queue.append(data)
        self._queued_bytes += len(data)
        self.counters.events_queued += 1
        config = self.config
        while len(queue) > config.queue_size or (
            self._queued_bytes > config.queue_bytes and len(queue) > 1
        ):
            self._queued_bytes -= len(queue.popleft())
            self.counters.queue_dropped += 1
            logger.warning(
                "no backend: the event queue is full (%d events or %d bytes), dropped the "
                "oldest event",
                config.queue_size,
                config.queue_bytes,
            )

    # ------------------------------------------------------------------ backend side

    def add_backend(self, backend: BackendLink) -> None:
        """A backend is ready for events: it gets the queue first, in order, and the clients
        whose events are in it (every client without a live backend) are pinned to it, so
        that their next events follow the queued ones to the same backend."""
        self.counters.backends_connected += 1
        queued = len(self._queue)
        while self._queue:
            backend.send(self._queue.popleft(), check=False)
        self._queued_bytes = 0
        if queued:
            logger.info("sent %d queued event(s) to backend %s", queued, backend.name)
            for client in self._clients.values():
                if client.backend is None or not client.backend.alive:
                    client.backend = backend
        if backend.alive:
            self._backends.append(backend)
            self._changed()

    def remove_backend(self, backend: BackendLink) -> None:
        """A backend left: requests it had not answered are refused; its clients' later
        events go to another backend."""
        if backend in self._backends:
            self._backends.remove(backend)
            self._changed()
        for pending in self._pending.values():
            if pending.backend is backend and not pending.done.is_set():
                pending.done.set()

    def link_opened(self, link: BackendLink) -> None:
        """A backend connection started (before it is ready for events)."""
        self._links.add(link)

    def link_closed(self, link: BackendLink) -> None:
        """A backend connection ended."""
        self._links.discard(link)
        self._changed()

    def _changed(self) -> None:
        self._links_changed.set()
        self._links_changed = trio.Event()

    async def wait_backends(self, count: int = 1) -> None:
        """Return once at least *count* backends are ready for events."""
        while len(self._backends) < count:
            await self._links_changed.wait()

    async def wait_changed(self) -> None:
        """Return at the next backend connecting, becoming ready, or leaving."""
        await self._links_changed.wait()

    def close_backends(self) -> None:
        """Stop reading from every backend: each link flushes what is queued and closes."""
        for link in self._links:
            link.input_scope.cancel()

    async def wait_backends_closed(self) -> None:
        """Return once every backend connection has ended."""
        while self._links:
            await self._links_changed.wait()

    def on_action(self, backend: BackendLink, action: Action) -> None:
        """Carry out one action from *backend* (an ``authenticate`` after the first frame
        does nothing: the link checked the first one)."""
        if isinstance(action, MessageToConnection):
            client = self._clients.get(action.conn_id)
            if client is None:
                self.counters.unknown_targets += 1
            elif client.link.deliver(action.message):
                self.counters.messages_out += 1
        elif isinstance(action, MessageToRoom):
            room = self._rooms.get(action.room_id)
            if room is None:
                self.counters.unknown_targets += 1
            else:
                self._deliver_all(list(room), action.message)
        elif isinstance(action, Broadcast):
            self._deliver_all(list(self._clients.values()), action.message)
        elif isinstance(action, Response):
            pending = self._pending.get(action.request_id)
            if pending is None or pending.done.is_set():
                self.counters.unknown_targets += 1
            else:
                pending.response = action
                pending.done.set()
        elif isinstance(action, CloseConnection):
            client = self._clients.get(action.conn_id)
            if client is None:
                self.counters.unknown_targets += 1
            else:
                client.link.close(action.code, action.reason)
        elif isinstance(action, PresenceRequest):
            backend.send(encode(self.local_presence(action)))

    def local_presence(self, request: PresenceRequest, *, complete: bool = True) -> PresenceReply:
        """The answer to *request* from this node's own clients."""
        node = self.node_id
        room = self._rooms.get(request.room_id, ())
        return PresenceReply(
            request_id=request.request_id,
            room_id=request.room_id,
            members=tuple(BrokerMember(client_id=client.client_id, node=node) for client in room),
            complete=complete,
        )

    def _deliver_all(self, clients: list[_Client], message: str) -> None:
        delivered = 0
        for client in clients:
            if client.link.deliver(message):
                delivered += 1
        self.counters.messages_out += delivered

    # ------------------------------------------------------------------ figures

    def statistics(self) -> BrokerStatistics:
        """What the hub holds now and has counted so far."""
        c = self.counters
        return BrokerStatistics(
            connections=len(self._clients),
            rooms=len(self._rooms),
            backends=len(self._backends),
            queued=len(self._queue),
            pending_requests=len(self._pending),
            requests=c.requests,
            accepted=c.accepted,
            rejected=c.rejected,
            timed_out=c.timed_out,
            no_backend=c.no_backend,
            bad_responses=c.bad_responses,
            messages_in=c.messages_in,
            messages_out=c.messages_out,
            events_queued=c.events_queued,
            queue_dropped=c.queue_dropped,
            unknown_targets=c.unknown_targets,
            bad_frames=c.bad_frames,
            replaced=c.replaced,
            backends_connected=c.backends_connected,
            backends_refused=c.backends_refused,
            backends_stalled=c.backends_stalled,
        )

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers."""
        return {
            "status": "ok",
            "connections": len(self._clients),
            "rooms": len(self._rooms),
            "backends": len(self._backends),
            "queued": len(self._queue),
        }

    def metrics_text(self) -> str:
        """``GET /metrics``: the Prometheus text exposition format."""
        c = self.counters
        gauges = {
            "connections": ("WebSocket clients connected", len(self._clients)),
            "rooms": ("Rooms with at least one client", len(self._rooms)),
            "backends": ("Backends connected", len(self._backends)),
            "queue_depth": ("Events waiting for a backend", len(self._queue)),
            "pending_requests": ("Connection requests waiting for a backend", len(self._pending)),
        }
        counters = {
            "connection_requests": ("Connection requests sent to backends", c.requests),
            "connections_accepted": ("Connection requests accepted", c.accepted),
            "connections_rejected": ("Connection requests rejected by a backend", c.rejected),
            "request_timeouts": ("Connection requests no backend answered in time", c.timed_out),
            "no_backend": ("Connection requests refused for want of a backend", c.no_backend),
            "messages_in": ("Messages from WebSocket clients", c.messages_in),
            "messages_out": ("Messages delivered to WebSocket clients", c.messages_out),
            "queue_dropped": ("Queued events dropped because the queue was full", c.queue_dropped),
            "unknown_targets": (
                "Actions for unknown clients, rooms or requests",
                c.unknown_targets,
            ),
            "bad_frames": ("Lines from backends that could not be decoded", c.bad_frames),
            "backends_refused": ("Backends refused (wrong or missing secret)", c.backends_refused),
            "backends_stalled": ("Backends disconnected for not reading", c.backends_stalled),
        }
        lines = render(
            [gauge(name, text, value) for name, (text, value) in gauges.items()]
            + [counter(name, text, value) for name, (text, value) in counters.items()]
        )
        if self.front is not None:
            lines += self.front.metrics_lines()
        return "\n".join(lines) + "\n"
