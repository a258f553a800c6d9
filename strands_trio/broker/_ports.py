"""The doors of the hub: what it needs of a client, of a backend and of a cluster, and the
records that pass through them.

The hub (``_hub.py``) is a switchboard: it holds no socket and runs no task. Everything it
reaches, it reaches through one of these small protocols, so that each side can be replaced
(``FakeBroker`` puts in-memory clients where the broker has WebSockets) and none touches
another's state:

- a :class:`ClientLink` per connected WebSocket client (``_front.py``'s connections);
- a :class:`BackendPort` per backend (``_backends.py``'s links, or another cluster node's
  backends);
- at most one :class:`ClusterPort`, the node of a broker cluster (``cluster/``), told about
  local joins and leaves and handed what has no local target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from ..protocol import PresenceReply, PresenceRequest, Response

__all__ = [
    "Admission",
    "BackendPort",
    "ClientLink",
    "ClusterPort",
    "ClusterStatistics",
    "Delivery",
    "Owner",
]


class Delivery:
    """A message on its way to one or many clients: its text, and the client side's encoding
    of it (a WebSocket frame), made once by the first client link that needs it and reused by
    every other member of a room.

    Args:
        text: The message.
    """

    __slots__ = ("frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.frame: bytes | None = None


class ClientLink(Protocol):
    """The hub's handle on one connected client."""

    def deliver(self, message: Delivery) -> bool:
        """Queue *message* without writing it yet and without blocking; ``False`` if it was
        not queued (the client is closing, or its queue is full: the link then closes it
        with 1008 by itself)."""
        ...

    def flush(self) -> None:
        """Write what :meth:`deliver` queued (the hub calls it once per batch of actions)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close the client with *code* and *reason*, after what is queued, without
        blocking."""
        ...


class Owner(Protocol):
    """Whose events a backend buffers: the bytes of a client's events not yet written
    (the hub's per-client flow control)."""

    pending: int


class BackendPort(Protocol):
    """The hub's handle on one backend (or on another cluster node's backends)."""

    name: str

    @property
    def alive(self) -> bool:
        """Whether it takes events."""
        ...

    @property
    def full(self) -> bool:
        """Whether its buffer is at its bound (the clients sending to it should wait)."""
        ...

    def send(self, data: bytes, owner: Owner | None = None) -> None:
        """Queue one encoded event, without blocking and without dropping it; *owner*'s
        ``pending`` counts its bytes until they are written."""
        ...

    async def wait_progress(self) -> None:
        """Return at the next write to the backend, or when it is gone."""
        ...


@attrs.frozen(kw_only=True)
class Admission:
    """A backend's answer to a WebSocket handshake (:meth:`Hub.admit`).

    Attributes:
        accepted: Whether the client may connect.
        status: When refused: the HTTP status to answer the handshake with: 403 (rejected by
            the backend), 503 (no backend, timeout, backend gone).
        close_code: When refused: the close code to close the upgraded socket with
            (``_refusals.py``: 4401, 4403, 4503, 4504...), the default way to refuse.
        client_id: The id the backend gave the client (when accepted).
        room_id: The room the backend put it in (when accepted).
        metadata: What later events carry in their context (when accepted).
        backend: The backend that answered: the client's events go there.
        reason: When refused, why, in words (for the HTTP answer and for logs).
    """

    accepted: bool
    status: int = 200
    close_code: int = 1000
    reason: str = ""
    client_id: str = ""
    room_id: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict)
    backend: BackendPort | None = None


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


class ClusterPort(Protocol):
    """What a hub tells and asks the cluster node it belongs to. Every method returns at
    once: the node does its Redis work in its own tasks."""

    def joined(self, client_id: str, room_id: str, *, room_created: bool) -> None:
        """A client connected here (*room_created*: the first of its room on this node)."""
        ...

    def left(self, client_id: str, room_id: str, *, room_emptied: bool) -> None:
        """A client connected here left (*room_emptied*: the last of its room here)."""
        ...

    def room_joined(self, client_id: str, room_id: str, *, room_created: bool) -> None:
        """A client connected here joined another room (*room_created*: its first member on
        this node)."""
        ...

    def room_left(self, client_id: str, room_id: str, *, room_emptied: bool) -> None:
        """A client connected here left a room it had joined (*room_emptied*: its last member
        on this node)."""
        ...

    def room_action(self, client_id: str, room_id: str, *, join: bool) -> None:
        """A backend made a client that is not connected here join (or leave) a room."""
        ...

    def room_message(self, room_id: str, message: str, *, local_members: bool) -> None:
        """A backend sent to a room (already delivered to this node's members)."""
        ...

    def private_message(self, client_id: str, message: str) -> None:
        """A backend sent to a client that is not connected to this node."""
        ...

    def broadcast(self, message: str) -> None:
        """A backend broadcast (already delivered to this node's clients)."""
        ...

    def close_client(self, client_id: str, code: int, reason: str) -> None:
        """A backend closed a client that is not connected to this node."""
        ...

    def presence(self, request: PresenceRequest, answer: Callable[[PresenceReply], None]) -> None:
        """Answer a backend's presence query for the whole cluster, by calling *answer*."""
        ...

    def response(self, response: Response) -> bool:
        """A backend answered a connection request: ``True`` if the request came from
        another node (the node sends the answer back), ``False`` if it is this node's."""
        ...

    def remote_backend(self) -> BackendPort | None:
        """Another node's backends, for this node's events while it has none."""
        ...

    def backends_changed(self, count: int) -> None:
        """This node's number of ready backends changed."""
        ...
