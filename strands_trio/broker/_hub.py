"""The broker's switchboard: clients, rooms, backends, the queue, and how events are routed.

Theory of operation. The hub holds no socket and runs no task: the WebSocket front
(``_front.py``), the backend links (``_backends.py``) and a cluster node (``cluster/``) call it,
and it reaches them back through the ports of ``_ports.py``. Everything runs in one Trio
thread, so no locks: every method that does not ``await`` is atomic.

- A WebSocket handshake becomes :meth:`Hub.admit`: a ``connection_request`` goes to a live
  backend (round robin) and the handshake waits for its ``response``, at most
  ``request_timeout`` seconds. With no backend, the answer is 503 at once and an ``error``
  event carrying the request is queued for the next backend (as the reference does).
  Only a ``response`` whose ``accepted`` is JSON ``false`` rejects (as the reference).
- An accepted client is :meth:`Hub.connect`-ed under the ``client_id`` the backend chose, in the
  room it chose, *pinned* to that backend: all its later events go there while that backend
  is connected, so one client's events keep their order end to end. When its backend leaves,
  the client is pinned to the next live backend on its next event.
- **Flow control toward backends.** Each client's events not yet written to its backend are
  counted (``ClientEntry.pending``, kept by the backend's buffer). :meth:`Hub.message` says when
  the client's reader should pause: its own events passed ``client_share`` bytes, or its
  backend's buffer is full; :meth:`Hub.wait_ready` returns when that is over. So a client that
  floods slows itself (TCP pushes back on it), not the others, and a backend that keeps
  reading is never dropped for being slower than its clients.
- With no live backend at all, events other than connection requests wait in a bounded queue
  (oldest dropped first, counted and logged), flushed in order to the next backend.
- Actions from backends (:meth:`Hub.on_actions`) reach clients through their
  :class:`ClientLink`: a message to a room is one :class:`Delivery` (framed once) handed to
  every member; the links are flushed once per batch of actions, so a burst costs one write
  per client, not one per message.
- A client is in its connect-time room and the rooms it joined (``_memberships.py``); its
  ``disconnected`` lists them all (``rooms``). A cluster node (:meth:`Hub.join_cluster`) is
  told about local joins and leaves and handed what has no local target; it calls back the
  ``deliver_*``, ``join_room``, ``leave_room`` and ``close_client`` methods.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..context import ConnectionRequestContext
from ..protocol import (
    NO_BACKEND,
    Action,
    Broadcast,
    CloseConnection,
    Disconnected,
    ErrorEvent,
    JoinRoom,
    LeaveRoom,
    MessageToConnection,
    MessageToRoom,
    NewConnection,
    PresenceReply,
    PresenceRequest,
    Response,
    encode,
    encode_new_message,
)
from ._admission import Admissions
from ._backend_set import BackendSet
from ._config import BrokerConfig
from ._handshake import Handshake
from ._hub_statistics import HubStatistics, hub_metrics
from ._memberships import Memberships
from ._ports import Admission, BackendPort, ClientLink, ClusterPort, Delivery
from ._prometheus import Metric
from ._queue import EventQueue
from ._refusals import NO_BACKEND as NO_BACKEND_CLOSE
from ._roster import ClientEntry, Roster

__all__ = ["REPLACED", "Hub", "HubStatistics"]

logger = logging.getLogger("strands_trio.broker")

REPLACED = "replaced by a new connection with the same client id"


_COUNTERS = ("no_backend", "messages_in", "messages_out", "unknown_targets", "replaced",
             "flow_pauses")  # fmt: skip


class Hub:
    """The broker's switchboard (see the module's theory of operation).

    Args:
        config: The broker's settings.
        reference: Behave like the reference broker where strands-trio's broker differs
            (for ``FakeBroker``'s reference mode): every later event of a client carries, as
            its metadata, the whole ``params`` of the response that accepted it (WIRE.md
            quirk 1), the extension actions (``close_connection``, ``presence``,
            ``join_room``, ``leave_room``) are ignored like any unknown action, and
            connection requests and ``disconnected`` events carry no extension fields
            (``query``, ``rooms``). By default events carry the metadata the backend set,
            and the extensions work.
    """

    def __init__(self, config: BrokerConfig, *, reference: bool = False) -> None:
        self.config = config
        #: This broker's node id (``config.node_id``, or a random one).
        self.node_id: str = config.node_id or secrets.token_hex(4)
        self._nested_metadata = reference
        self._share = config.client_share
        self._roster = Roster()
        # The roster's dicts, read directly on hot paths.
        self._clients, self._rooms = self._roster.clients, self._roster.rooms
        self._memberships = rooms = Memberships(self._roster, self.count_unknown_target)
        #: ``(client_id, room_id) -> bool``: put a client connected here in a room too, or
        #: take it out; whether it is connected here (``_memberships.py``).
        self.join_room, self.leave_room = rooms.join, rooms.leave
        self._backends = BackendSet(self._backends_changed)
        self._admissions = Admissions(config.request_timeout, send_query=not reference)
        self._queue = EventQueue(config.queue_size, config.queue_bytes)
        self._ids = itertools.count()
        self._dirty: list[ClientEntry] = []
        self._batching = False
        self._cluster: ClusterPort | None = None
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._handlers: dict[type, Callable[[Any, Any], None]] = {
            MessageToConnection: self._to_connection,
            MessageToRoom: self._to_room,
            Broadcast: self._broadcast,
            Response: self._response,
            CloseConnection: self._close,
            PresenceRequest: self._presence,
            JoinRoom: rooms.on_join,
            LeaveRoom: rooms.on_leave,
        }
        if reference:  # the reference ignores actions it does not know
            for extension in (CloseConnection, PresenceRequest, JoinRoom, LeaveRoom):
                del self._handlers[extension]

    def join_cluster(self, node: ClusterPort) -> None:
        """Make this hub a node of a cluster: *node* hears of local joins and leaves and gets
        what has no local target (see ``cluster/``)."""
        self._cluster = self._memberships.cluster = node

    # ------------------------------------------------------------------ WebSocket side

    async def admit(self, handshake: Handshake) -> Admission:
        """Ask a backend whether this WebSocket client may connect, and where it goes.

        Waits for the answer at most ``config.request_timeout`` seconds. Never raises for a
        backend's failings: no backend, a timeout, a backend leaving before it answered or an
        unusable answer are all refusals, with the HTTP status to send.
        """
        backend = self._pick()
        if backend is not None:
            return await self._admissions.ask(backend, handshake)
        self._counts["no_backend"] += 1
        request = ConnectionRequestContext(
            headers=handshake.headers,
            url=handshake.url,
            query="" if self._nested_metadata else handshake.query,  # reference: no query
            remote_addr=handshake.remote_addr,
            accepted=False,
        )
        self.enqueue(
            encode(ErrorEvent(request_id=str(uuid.uuid4()), error=NO_BACKEND, context=request))
        )
        logger.warning("no backend to ask about %s: refused with 503", handshake.remote_addr)
        return Admission(accepted=False, status=503, close_code=NO_BACKEND_CLOSE, reason=NO_BACKEND)

    def connect(self, admission: Admission, link: ClientLink) -> ClientEntry:
        """Register an accepted client once its socket is open; its backend is told with a
        ``new_connection`` event. A client already connected under the same id is closed
        (1008): ids are the backend's to keep unique, and messages to an id must reach one
        socket."""
        metadata = admission.metadata
        if self._nested_metadata:  # the reference keeps the whole response params
            metadata = {
                "accepted": True,
                "client_id": admission.client_id,
                "metadata": metadata,
                "room_id": admission.room_id,
            }
        client = ClientEntry(admission, link, metadata)
        previous = self._clients.get(client.client_id)
        if previous is not None:
            self._counts["replaced"] += 1
            logger.warning(
                "client id %r connected again: closing its older socket", client.client_id
            )
            self._forget(previous)
            previous.link.close(1008, REPLACED)
        room_created = self._roster.add(client)
        if self._cluster is not None:
            self._cluster.joined(client.client_id, client.room_id, room_created=room_created)
        self._event(
            client, encode(NewConnection(request_id=self._next_id(), context=client.context))
        )
        return client

    def message(self, client: ClientEntry, text: str) -> bool:
        """A client sent *text*: a ``new_message`` event to its backend. Returns whether the
        client's reader should now wait (:meth:`wait_ready`) before reading more."""
        self._counts["messages_in"] += 1
        data = encode_new_message(self._next_id(), client.context_json, text)
        backend = client.backend
        if backend is None or not backend.alive:
            backend = client.backend = self._pick()
            if backend is None:
                self.enqueue(data)
                return False
        backend.send(data, client)
        return client.pending > self._share or backend.full

    async def wait_ready(self, client: ClientEntry) -> None:
        """Wait until *client* may send again: its events waiting for its backend are back
        under its share and the backend's buffer has room (or the backend is gone)."""
        self._counts["flow_pauses"] += 1
        while True:
            backend = client.backend
            if backend is None or not backend.alive:
                return
            if client.pending <= self._share and not backend.full:
                return
            await backend.wait_progress()

    def disconnect(self, client: ClientEntry) -> None:
        """A client's socket closed: forget it, and send its backend ``disconnected``."""
        rooms = None if self._nested_metadata else self._roster.rooms_of(client)
        if self._forget(client):
            event = Disconnected(request_id=self._next_id(), context=client.context, rooms=rooms)
            self._event(client, encode(event))

    def _forget(self, client: ClientEntry) -> bool:
        if client in self._roster.joined_by and self._clients.get(client.client_id) is client:
            self._memberships.leave_all(client)
        removed, room_emptied = self._roster.remove(client)
        if removed and self._cluster is not None:
            self._cluster.left(client.client_id, client.room_id, room_emptied=room_emptied)
        return removed

    # ------------------------------------------------------------------ routing events

    def _next_id(self) -> str:
        return f"e{next(self._ids)}"

    def pick_backend(self) -> BackendPort | None:
        """The next local backend, round robin, or ``None``."""
        return self._backends.next()

    def _pick(self) -> BackendPort | None:
        backend = self.pick_backend()
        if backend is None and self._cluster is not None:
            return self._cluster.remote_backend()
        return backend

    def _event(self, client: ClientEntry, data: bytes) -> None:
        backend = client.backend
        if backend is None or not backend.alive:
            backend = client.backend = self._pick()
        if backend is None:
            self.enqueue(data)
        else:
            backend.send(data)

    def enqueue(self, data: bytes) -> None:
        """Keep one encoded event for the next backend (the no-backend queue)."""
        self._queue.append(data)

    # ------------------------------------------------------------------ backend side

    def add_backend(self, backend: BackendPort) -> None:
        """A backend is ready for events: it gets the queue first, in order, and the clients
        whose events are in it (every client without a live backend) are pinned to it, so
        that their next events follow the queued ones to the same backend."""
        queued = len(self._queue)
        for event in self._queue.drain():
            backend.send(event)
        if queued:
            logger.info("sent %d queued event(s) to backend %s", queued, backend.name)
            for client in self._clients.values():
                if client.backend is None or not client.backend.alive:
                    client.backend = backend
        if backend.alive:
            self._backends.add(backend)

    def remove_backend(self, backend: BackendPort) -> None:
        """A backend left: requests it had not answered are refused; its clients' later
        events go to another backend."""
        self._backends.discard(backend)
        self._admissions.backend_gone(backend)

    def _backends_changed(self, count: int) -> None:
        if self._cluster is not None:
            self._cluster.backends_changed(count)

    async def wait_backends(self, count: int = 1) -> None:
        """Return once exactly *count* backends are ready for events (``0``: once the last
        has left)."""
        await self._backends.wait_for(count)

    async def wait_changed(self) -> None:
        """Return at the next backend becoming ready or leaving."""
        await self._backends.wait_changed()

    def on_actions(self, backend: BackendPort | None, actions: list[Action]) -> None:
        """Carry out a batch of actions from *backend*; every client they reached is flushed
        once, at the end. Actions the hub has no use for are ignored, as the reference does
        (an ``authenticate`` after the first frame: the link checked the first one)."""
        handlers, self._batching = self._handlers, True
        try:
            for action in actions:
                handler = handlers.get(type(action))
                if handler is not None:
                    handler(backend, action)
        finally:
            self._batching = False
            self._flush()

    def _to_connection(self, backend: object, action: MessageToConnection) -> None:
        client = self._clients.get(action.conn_id)
        if client is not None:  # the hot path of deliver_to_client, inside a batch
            if self._deliver(client, Delivery(action.message)):
                self._counts["messages_out"] += 1
        elif self._cluster is not None:
            self._cluster.private_message(action.conn_id, action.message)
        else:
            self._counts["unknown_targets"] += 1

    def _to_room(self, backend: object, action: MessageToRoom) -> None:
        local = self.deliver_to_room(action.room_id, action.message)
        if self._cluster is not None:
            self._cluster.room_message(action.room_id, action.message, local_members=local)
        elif not local:
            self._counts["unknown_targets"] += 1

    def _broadcast(self, backend: object, action: Broadcast) -> None:
        self.deliver_to_all(action.message)
        if self._cluster is not None:
            self._cluster.broadcast(action.message)

    def _response(self, backend: object, action: Response) -> None:
        if self._cluster is None or not self._cluster.response(action):
            self.complete_admission(action)

    def _close(self, backend: object, action: CloseConnection) -> None:
        if not self.close_client(action.conn_id, action.code, action.reason):
            if self._cluster is not None:
                self._cluster.close_client(action.conn_id, action.code, action.reason)
            else:
                self._counts["unknown_targets"] += 1

    def _presence(self, backend: BackendPort | None, action: PresenceRequest) -> None:
        if backend is None:
            return

        def answer(reply: PresenceReply) -> None:
            if backend.alive:
                backend.send(encode(reply))

        if self._cluster is not None:
            self._cluster.presence(action, answer)
        else:
            answer(self.local_presence(action))

    def complete_admission(self, response: Response) -> bool:
        """Hand *response* to the handshake waiting for it; ``False`` (counted as an
        unknown target) if none is."""
        return self._admissions.answer(response)

    def fail_admission(self, request_id: str) -> None:
        """Refuse the handshake waiting for *request_id* (503), if any: its backend is gone."""
        self._admissions.fail(request_id)

    # ------------------------------------------------------------------ delivering

    def _deliver(self, client: ClientEntry, message: Delivery) -> bool:
        if not client.link.deliver(message):
            return False
        if not client.dirty:
            client.dirty = True
            self._dirty.append(client)
        return True

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.dirty = False
            client.link.flush()

    def flush(self) -> None:
        """Write what the ``deliver_*`` calls made with ``flush=False`` queued (once per
        client, however many messages it got)."""
        self._flush()

    def deliver_to_client(self, client_id: str, text: str, *, flush: bool = True) -> bool:
        """Send *text* to the client *client_id* if it is connected here; whether it is.
        With ``flush=False`` it is only queued until :meth:`flush` (a caller delivering a
        burst writes to each client once)."""
        client = self._clients.get(client_id)
        if client is None:
            return False
        if self._deliver(client, Delivery(text)):
            self._counts["messages_out"] += 1
        if flush and not self._batching:
            self._flush()
        return True

    def deliver_to_room(self, room_id: str, text: str, *, flush: bool = True) -> bool:
        """Send *text* to this node's members of *room_id*; whether it has any
        (``flush`` as for :meth:`deliver_to_client`)."""
        room = self._rooms.get(room_id)
        if room is None:
            return False
        self._deliver_all(list(room), text, flush)
        return True

    def deliver_to_all(self, text: str, *, flush: bool = True) -> None:
        """Send *text* to every client connected here (``flush`` as for
        :meth:`deliver_to_client`)."""
        self._deliver_all(list(self._clients.values()), text, flush)

    def _deliver_all(self, clients: list[ClientEntry], text: str, flush: bool = True) -> None:
        message = Delivery(text)  # framed once, for every member
        deliver = self._deliver
        delivered = 0
        for client in clients:
            if deliver(client, message):
                delivered += 1
        self._counts["messages_out"] += delivered
        if flush and not self._batching:
            self._flush()

    def close_client(self, client_id: str, code: int, reason: str) -> bool:
        """Close the client *client_id* if it is connected here; whether it is."""
        client = self._clients.get(client_id)
        if client is None:
            return False
        if reason == REPLACED:
            self._counts["replaced"] += 1
        client.link.close(code, reason)
        return True

    # ------------------------------------------------------------------ for a cluster node

    def local_clients(self) -> Iterator[tuple[str, str]]:
        """``(client_id, room_id)`` of every client connected here."""
        return self._roster.ids()

    def local_joined_rooms(self) -> Iterator[tuple[str, str]]:
        """``(client_id, room_id)`` of every room the clients connected here joined."""
        return self._roster.joined_rooms()

    def local_presence(self, request: PresenceRequest, *, complete: bool = True) -> PresenceReply:
        """The answer to *request* from this node's own clients."""
        return self._roster.presence(request, self.node_id, complete)

    def count_unknown_target(self) -> None:
        """Count an action whose target no node has (``unknown_targets``): the hub hands a
        cluster node what has no local target without counting it, and the node calls this
        when Redis found none elsewhere either."""
        self._counts["unknown_targets"] += 1

    @property
    def backend_count(self) -> int:
        """Backends ready for events on this node."""
        return len(self._backends)

    # ------------------------------------------------------------------ figures

    def statistics(self) -> HubStatistics:
        """What the hub holds now and has counted so far."""
        return HubStatistics(
            connections=len(self._clients),
            rooms=len(self._rooms),
            backends=len(self._backends),
            queued=len(self._queue),
            pending_requests=self._admissions.waiting,
            **self._memberships.counts(),
            **self._all_counts(),
        )

    def _all_counts(self) -> dict[str, int]:
        admitted = self._admissions.counts
        counts = dict(self._counts)
        for name in ("requests", "accepted", "rejected", "timed_out", "bad_responses"):
            counts[name] = admitted[name]
        counts["unknown_targets"] += admitted["unanswerable"]
        counts["events_queued"] = self._queue.queued
        counts["queue_dropped"] = self._queue.dropped
        return counts

    def health(self) -> dict[str, Any]:
        """The hub's part of ``GET /healthz``."""
        clients, rooms, backends = len(self._clients), len(self._rooms), len(self._backends)
        return {"connections": clients, "rooms": rooms, "backends": backends,
                "queued": len(self._queue)}  # fmt: skip

    def metrics(self) -> list[Metric]:
        """The hub's part of ``GET /metrics``."""
        return hub_metrics(self.statistics())
