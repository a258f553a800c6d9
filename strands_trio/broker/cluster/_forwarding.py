"""A node without backends: its clients' events go to another node's backends, through Redis.

Theory of operation. The hub asks its cluster node for a backend when it has none of its own
(``ClusterPort.remote_backend``); :meth:`Forwarding.remote_backend` answers with a
:class:`RemoteBackend` (a :class:`~.._ports.BackendPort`) for one of the other live nodes that
have backends, round robin. What the hub sends to it is published on that node's channel as
an ``ev`` envelope carrying the event line as it is; a client's later events follow the same
way, since the hub pins the client to the backend that admitted it (one queue to Redis, one
channel: in order).

On the node that has backends, :meth:`Forwarding.on_envelope` gets the envelope:

- ``ev`` ``connection_request``: handed to one of its backends (round robin); the request id
  is remembered with the node that asked, so that the backend's ``response`` goes back to it
  (:meth:`Forwarding.response`, a ``resp`` envelope on that node's channel) rather than to a
  local handshake. With no backend here now, a ``gone`` envelope answers at once, and the
  asking node refuses the handshake (503).
- ``ev`` any other event: handed to a backend of this node *pinned* by client id, so that one
  client's events keep their order; queued in the hub's no-backend queue if there is none.
  The pin goes with the client's ``disconnected`` event.
- ``resp``: the answer to one of this node's forwarded connection requests: it completes the
  waiting handshake as a local answer would. ``gone``: that node had no backend; refused.

Which nodes have backends is learnt from the registry at each renewal (``_registry.py``
calls :meth:`Forwarding.backend_nodes_are`). A forwarded event that finds nobody on a node's
channel (the node died) is counted as lost, and that node is skipped until its ``alive`` key
has had time to expire (``node_ttl``), so that the next client is refused at once rather than
sent to a backend that is not there. The renewal also forgets requests never answered (after
twice ``request_timeout``; those whose backend left are answered ``gone`` at once), and the
pins of clients whose node left the cluster or whose backend left (their ``disconnected``
will never come).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import attrs
import orjson
import trio

from ...protocol import Response, Role, decode_line, encode
from .._config import BrokerConfig
from .._ports import BackendPort, Owner
from ._channels import Channels
from ._writer import Writer

__all__ = ["Forwarding", "ForwardingHub", "ForwardingStatistics", "RemoteBackend"]

logger = logging.getLogger("strands_trio.broker.cluster")


class ForwardingHub(Protocol):
    """What forwarding needs of the hub (its public side)."""

    def pick_backend(self) -> BackendPort | None: ...

    def enqueue(self, data: bytes) -> None: ...

    def complete_admission(self, response: Response) -> bool: ...

    def fail_admission(self, request_id: str) -> None: ...


@attrs.frozen(kw_only=True)
class ForwardingStatistics:
    """Forwarding's figures (:meth:`Forwarding.statistics`).

    Attributes:
        forwarded_events: Events of this node's clients sent to another node's backends.
        published: Envelopes published (forwarded events, answers to forwarded requests).
        lost: Forwarded events that found their node gone.
        bad_messages: Forwarding envelopes that could not be understood.
        pins: Other nodes' clients pinned to a backend of this node now.
        remote_requests: Other nodes' connection requests waiting for a backend here now.
    """

    forwarded_events: int
    published: int
    lost: int
    bad_messages: int
    pins: int
    remote_requests: int


class RemoteBackend:
    """Another node's backends, as the hub of a node without backends sees them: what is
    sent to it is published on that node's channel (a :class:`~.._ports.BackendPort`).

    Args:
        forwarding: The forwarding that publishes for it.
        node: The node whose backends these are.
    """

    __slots__ = ("_forwarding", "name", "node")

    def __init__(self, forwarding: Forwarding, node: str) -> None:
        self._forwarding = forwarding
        self.node = node
        self.name = f"(backends of node {node})"

    @property
    def alive(self) -> bool:
        """Whether that node is known to have backends."""
        return self._forwarding.has_backends(self.node)

    @property
    def full(self) -> bool:
        """Never: what is sent goes to the queue to Redis, bounded there."""
        return False

    def send(self, data: bytes, owner: Owner | None = None) -> None:
        """Publish one event line for that node's backends (*owner* is not charged: the
        event leaves this node at once)."""
        self._forwarding.forward(self.node, data)

    async def wait_progress(self) -> None:
        """Return once the queue to Redis has made progress, or at once if that node is no
        longer known to have backends."""
        if not self.alive:
            await trio.lowlevel.checkpoint()
            return
        await self._forwarding.wait_written()


class Forwarding:
    """Events between a node without backends and the nodes with some (see the module's
    theory of operation).

    Args:
        hub: This node's hub.
        config: The broker's settings (``node_ttl``, ``request_timeout``).
        channels: This node's channel names and envelopes.
        writer: The queue to Redis.
    """

    def __init__(
        self, hub: ForwardingHub, config: BrokerConfig, channels: Channels, writer: Writer
    ) -> None:
        self._hub = hub
        self._config = config
        self._channels = channels
        self._writer = writer
        #: Other live nodes with at least one backend.
        self._backend_nodes: set[str] = set()
        #: Nodes found gone (nobody on their channel), and until when to ignore them.
        self._gone: dict[str, float] = {}
        self._remotes: dict[str, RemoteBackend] = {}
        self._turn = 0
        #: Connection requests forwarded here by another node:
        #: request id -> (that node, the backend asked, when).
        self._requests: dict[str, tuple[str, BackendPort, float]] = {}
        #: Other nodes' clients whose events our backends take: client id -> (backend, node).
        self._pins: dict[Any, tuple[BackendPort, str]] = {}
        self._forwarded = self._published = self._lost = self._bad = 0

    # ------------------------------------------------------------------ this node's events

    @property
    def backend_nodes(self) -> frozenset[str]:
        """The other live nodes known to have backends."""
        return frozenset(self._backend_nodes)

    def has_backends(self, node: str) -> bool:
        """Whether *node* is known to have backends."""
        return node in self._backend_nodes

    def remote_backend(self) -> RemoteBackend | None:
        """The backends of the next node that has some (round robin), or ``None``."""
        if not self._backend_nodes:
            return None
        nodes = sorted(self._backend_nodes)
        self._turn = (self._turn + 1) % len(nodes)
        node = nodes[self._turn]
        remote = self._remotes.get(node)
        if remote is None:
            remote = self._remotes[node] = RemoteBackend(self, node)
        return remote

    def forward(self, node: str, data: bytes) -> None:
        """Publish an event line for the backends of *node*."""
        self._forwarded += 1

        def on_published(reply: Any) -> None:
            if reply == 0:  # nobody listens on its channel: the node is gone
                self._backend_nodes.discard(node)
                # Until its alive key expires, renewals would list it again: skip it.
                self._gone[node] = trio.current_time() + self._config.node_ttl
                logger.warning(
                    "node %s: an event sent to node %s found it gone",
                    self._channels.node_id,
                    node,
                )
                self._lost += 1
            else:
                self._published += 1

        envelope = self._channels.raw_envelope("ev", data.rstrip(b"\n"))
        self._writer.publish(("PUBLISH", self._channels.of_node(node), envelope), on_published)

    async def wait_written(self) -> None:
        """Return once the queue to Redis has made progress."""
        await self._writer.wait_written()

    # ------------------------------------------------------------------ other nodes' events

    def response(self, response: Response) -> bool:
        """A backend of this node answered a connection request: ``True`` if another node
        forwarded it (the answer is sent back to it), else ``False``."""
        asked = self._requests.pop(response.request_id, None)
        if asked is None:
            return False
        self._send(asked[0], "resp", encode(response).rstrip(b"\n"))
        return True

    def on_envelope(self, kind: str, envelope: dict[str, Any]) -> None:
        """An ``ev``, ``resp`` or ``gone`` envelope arrived on this node's channel."""
        line, origin = envelope.get("d"), envelope.get("o")
        if type(line) is not dict or type(origin) is not str:
            self._bad += 1
            return
        if kind == "ev":
            self.forwarded_event(origin, line)
        elif kind == "resp":
            try:
                response = decode_line(orjson.dumps(line), Role.BROKER)
            except Exception:  # the peer's data: count it, never raise in the subscriber
                self._bad += 1
                return
            if type(response) is Response:
                self._hub.complete_admission(response)
        else:  # "gone": the node we asked has no backend now: refuse (503) at once
            request_id = line.get("request_id")
            if type(request_id) is str:
                self._hub.fail_admission(request_id)

    def forwarded_event(self, origin: str, event: dict[str, Any]) -> None:
        """An event of a client of node *origin*, for this node's backends."""
        data = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        action = event.get("action")
        hub = self._hub
        if action == "connection_request":
            request_id = event.get("request_id")
            backend = hub.pick_backend()
            if backend is None or type(request_id) is not str:
                self._send(origin, "gone", orjson.dumps({"request_id": request_id}))
                return
            self._requests[request_id] = (origin, backend, trio.current_time())
            backend.send(data)
            return
        params = event.get("params")
        context = params.get("context") if type(params) is dict else None
        client_id = context.get("client_id") if type(context) is dict else None
        pin = self._pins.get(client_id)
        backend = pin[0] if pin is not None else None
        if backend is None or not backend.alive:
            backend = hub.pick_backend()
            if client_id is not None and backend is not None:
                self._pins[client_id] = (backend, origin)
        if backend is None:
            hub.enqueue(data)
        else:
            backend.send(data)
        if action == "disconnected":
            self._pins.pop(client_id, None)

    def _send(self, node: str, kind: str, line: bytes) -> None:
        envelope = self._channels.raw_envelope(kind, line)
        self._writer.publish(("PUBLISH", self._channels.of_node(node), envelope), self._sent)

    def _sent(self, reply: Any) -> None:
        self._published += 1

    # ------------------------------------------------------------------ at each renewal

    def backend_nodes_are(self, nodes: set[str]) -> None:
        """The registry found these other live nodes with backends; also forgets the
        forwarded requests never answered (after twice ``request_timeout``), and those whose
        backend left (``gone`` to the node that asked)."""
        now = trio.current_time()
        self._gone = {node: until for node, until in self._gone.items() if until > now}
        self._backend_nodes = nodes - self._gone.keys()
        timeout = self._config.request_timeout
        limit = -math.inf if timeout is None else now - 2 * timeout
        for request_id, (origin, backend, when) in list(self._requests.items()):
            if when < limit:
                del self._requests[request_id]
            elif not backend.alive:  # it will never answer: the asking node refuses now
                del self._requests[request_id]
                self._send(origin, "gone", orjson.dumps({"request_id": request_id}))

    def wants_live_nodes(self) -> bool:
        """Whether :meth:`live_nodes_are` has pins to prune (else the registry need not ask
        Redis for the live nodes)."""
        return bool(self._pins)

    def live_nodes_are(self, live: set[str]) -> None:
        """Forget the pins of other nodes' clients whose ``disconnected`` will never come:
        their node is gone from the cluster, or the backend they were pinned to is."""
        for client_id, (backend, origin) in list(self._pins.items()):
            if origin not in live or not backend.alive:
                del self._pins[client_id]

    # ------------------------------------------------------------------ figures

    def statistics(self) -> ForwardingStatistics:
        """Forwarding's figures now."""
        return ForwardingStatistics(
            forwarded_events=self._forwarded,
            published=self._published,
            lost=self._lost,
            bad_messages=self._bad,
            pins=len(self._pins),
            remote_requests=len(self._requests),
        )
