"""The broker cluster: broker nodes that reach each other's clients through Redis.

Theory of operation. A broker started with ``BrokerConfig.redis_url`` runs a
:class:`ClusterHub`: the hub of ``_hub.py``, whose actions also go to the other nodes. Events
from clients go to this node's own backends, or, when it has none, to another node's (below).
With ``P`` the ``cluster_prefix``, Redis holds:

====================== =================================================================
``P alive:<node>``      a node's sign of life: a key with a time to live of ``node_ttl``,
                        renewed every third of it (:meth:`ClusterHub._keep_alive`)
``P nodes``             the set of nodes that registered and were not swept yet
``P clients``           hash client id -> node: where a private message goes
``P presence:<room>``   hash client id -> node: who is in a room, for presence queries
``P owned:<node>``      hash client id -> room: what a node registered, to sweep it
``P backends``          hash node -> number of backends, for nodes that have none
====================== =================================================================

and these pub/sub channels, each message an orjson envelope ``{"o": origin node, ...}``:

- ``P room:<room>``: room messages; a node subscribes while it has clients in the room, so
  nodes without members get nothing;
- ``P all``: broadcasts, every node subscribed;
- ``P node:<node>``: private messages and closes for one node's clients, found in
  ``P clients`` by one script that looks the client up and publishes (no fan-out to every
  node); and events for that node's backends from a node without any (``ev``), with the
  answers to its connection requests (``resp``, ``gone``).

An action from a backend reaches this node's clients directly, then is published; every node
ignores its own envelopes, so each client gets each message once. A dead node is recognised
by its missing ``alive`` key: presence answers and private-message lookups skip its clients
from then on (within ``node_ttl`` of its last renewal), and the next sweep (every node runs one
each ``node_ttl / 3``) deletes its entries from the hashes. A graceful shutdown sweeps its own
node at once.

A node without backends: :meth:`ClusterHub._pick` (the hub's choice of a backend for a
connection request, or for a client without one) falls back to a :class:`_RemoteBackend`,
another live node with backends (learnt from ``P backends`` at each renewal), whose ``send``
publishes the event line on that node's channel. That node hands it to one of its backends,
pinned by client id, and sends a backend's ``response`` to a forwarded request back to the
node that asked, where it completes the pending admission as a local one would.

Everything this node writes to Redis goes through one FIFO queue and one writer task, which
sends what has accumulated as one pipeline (:meth:`LiveRedis.execute_many`): the hub never
waits for Redis, and writes keep their order (a client's join before its leave, a
re-registration after the joins and leaves before it). While Redis is unreachable, what
would have been published is counted as lost (``statistics().cluster.lost``) and logged once
per outage: delivery across nodes is at most once. Registry writes that were lost mark the
node *dirty*; when Redis is back (or whenever this node's ``alive`` key was missing: Redis
restarted empty, or this node was taken for dead), the node clears what it had registered
and registers its current clients again, in the same queue.

Tasks, in :meth:`ClusterHub.serve`, which ``serve_broker`` runs around its other services::

    serve()
    ├── serve_live_redis      the command connection, reconnected with backoff
    ├── serve_live_pubsub     the subscriber: on_message -> _on_envelope (sync, quick)
    ├── _write_loop           the FIFO queue -> pipelines
    ├── _keep_alive           renew alive, re-register when needed, learn which nodes have
    │                         backends, sweep dead nodes
    ├── _watch_redis          a reconnection wakes _keep_alive at once
    └── _subscriptions        SUBSCRIBE/UNSUBSCRIBE room channels as local rooms come and go

The scripts compute key names from the prefix, so the cluster needs one Redis (a primary,
with replicas or Sentinel if wanted), not a Redis Cluster.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from ..protocol import (
    Broadcast,
    BrokerMember,
    CloseConnection,
    MessageToConnection,
    MessageToRoom,
    PresenceReply,
    PresenceRequest,
    Response,
    Role,
    decode_line,
    encode,
)
from ..redis import (
    LivePubSub,
    LiveRedis,
    Message,
    RedisError,
    RedisReplyError,
    serve_live_pubsub,
    serve_live_redis,
)
from . import _cluster_scripts as scripts
from ._config import BrokerConfig
from ._hub import BrokerStatistics, ClusterStatistics, Hub, _Client
from ._prometheus import counter, gauge, render

if TYPE_CHECKING:
    from ._backends import BackendLink

__all__ = ["ClusterHub"]

logger = logging.getLogger("strands_trio.broker.cluster")

#: Commands sent in one pipeline at most.
_BATCH: Final = 1024
#: Publishes waiting for the writer beyond which new ones are dropped (counted as lost).
_MAX_QUEUED: Final = 50_000
#: Clients registered again per script call after an outage.
_RESYNC_CHUNK: Final = 500
_REPLACED: Final = "replaced by a new connection with the same client id"

OnReply = Callable[[Any], None]


def _eval(script: str, *args: str | bytes | int) -> tuple[str | bytes | int, ...]:
    return ("EVAL", script, 0, *args)


class ClusterHub(Hub):
    """A :class:`~strands_trio.broker.Hub` whose actions reach the clients of every node of
    its cluster (see the module's theory of operation). :meth:`serve` runs its Redis side.

    Args:
        config: The broker's settings; ``config.redis_url`` must be set.
    """

    def __init__(self, config: BrokerConfig) -> None:
        if config.redis_url is None:
            raise ValueError("a ClusterHub needs config.redis_url")
        super().__init__(config)
        prefix = config.cluster_prefix
        self._prefix = prefix
        self._node_channel = f"{prefix}node:{self.node_id}".encode()
        self._all_channel = f"{prefix}all".encode()
        self._room_prefix = f"{prefix}room:".encode()
        # Our own envelopes start with exactly these bytes (orjson keeps the key order).
        self._own = b'{"o":' + orjson.dumps(self.node_id) + b","
        self._redis_queue: collections.deque[tuple[tuple[Any, ...], OnReply | None]] = (
            collections.deque()
        )
        self._wake_writer = trio.Event()
        self._wake_keeper = trio.Event()
        self._wake_subscriber = trio.Event()
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._dirty = True  # nothing registered yet
        self._synced = False  # registered since the last (re)connection, subscriptions done
        self._subscribing = False
        self._progress = trio.Event()  # set (and replaced) at each step towards _synced
        self._crashed = False
        self._scope: trio.CancelScope | None = None
        #: Other live nodes with at least one backend (for events of a node without one).
        self._backend_nodes: set[str] = set()
        #: Nodes found gone (nobody on their channel), and until when to ignore them.
        self._gone: dict[str, float] = {}
        self._leaving = False
        self._remote_backends: dict[str, _RemoteBackend] = {}
        self._remote_turn = 0
        #: Connection requests forwarded here by another node: request id -> (node, when).
        self._remote_requests: dict[str, tuple[str, float]] = {}
        #: Clients of other nodes whose events come here: client id -> our backend.
        #: Other nodes' clients whose events our backends take: client id -> (backend, node).
        self._remote_pins: dict[Any, tuple[BackendLink, str]] = {}
        self._forwarded = 0
        self.redis: LiveRedis | None = None
        self.pubsub: LivePubSub | None = None
        # Counters.
        self._published = self._received = self._lost = self._unknown = 0
        self._resyncs = self._swept = self._bad_envelopes = self._replaced_remote = 0
        self._outage_lost: int | None = None  # lost in the current outage, None if none

    # ------------------------------------------------------------------ local hooks

    def connect(self, admission: Any, link: Any) -> _Client:
        client = super().connect(admission, link)
        room = self._rooms[client.room_id]
        if len(room) == 1:
            self._room_created(client.room_id)
        envelope = self._envelope(k="close", c=client.client_id, code=1008, reason=_REPLACED)
        self._write(
            _eval(
                scripts.JOIN, self._prefix, self.node_id, client.client_id, client.room_id, envelope
            ),
            self._on_join,
        )
        return client

    def _forget(self, client: _Client) -> bool:
        if not super()._forget(client):
            return False
        if client.room_id not in self._rooms:
            self._room_emptied(client.room_id)
        self._write(
            _eval(scripts.LEAVE, self._prefix, self.node_id, client.client_id, client.room_id),
            self._on_registry_reply,
        )
        return True

    def _room_created(self, room_id: str) -> None:
        if room_id in self._to_unsubscribe:
            self._to_unsubscribe.discard(room_id)
        else:
            self._to_subscribe.add(room_id)
        self._wake_subscriber.set()

    def _room_emptied(self, room_id: str) -> None:
        if room_id in self._to_subscribe:
            self._to_subscribe.discard(room_id)
        else:
            self._to_unsubscribe.add(room_id)
        self._wake_subscriber.set()

    # ------------------------------------------------------------------ actions

    def on_action(self, backend: Any, action: Any) -> None:
        """Carry out one action from *backend*, here and on the other nodes."""
        kind = type(action)
        if kind is MessageToRoom:
            room = self._rooms.get(action.room_id)
            if room is not None:
                self._deliver_all(list(room), action.message)
            self._publish(
                self._room_prefix + action.room_id.encode(),
                self._envelope(m=action.message),
                self._on_room_published if room is None else self._on_published,
            )
        elif kind is MessageToConnection:
            client = self._clients.get(action.conn_id)
            if client is not None:
                if client.link.deliver(action.message):
                    self.counters.messages_out += 1
            else:
                self._send_remote(
                    action.conn_id, self._envelope(c=action.conn_id, m=action.message)
                )
        elif kind is Broadcast:
            self._deliver_all(list(self._clients.values()), action.message)
            self._publish(self._all_channel, self._envelope(m=action.message), self._on_published)
        elif kind is CloseConnection:
            client = self._clients.get(action.conn_id)
            if client is not None:
                client.link.close(action.code, action.reason)
            else:
                envelope = self._envelope(
                    k="close", c=action.conn_id, code=action.code, reason=action.reason
                )
                self._send_remote(action.conn_id, envelope)
        elif kind is PresenceRequest:
            self._presence(backend, action)
        elif kind is Response and action.request_id in self._remote_requests:
            origin, _ = self._remote_requests.pop(action.request_id)
            line = encode(action).rstrip(b"\n")
            self._publish_command(
                ("PUBLISH", self._channel_of(origin), self._raw_envelope("resp", line)),
                self._on_published,
            )
        else:
            super().on_action(backend, action)

    def _channel_of(self, node: str) -> bytes:
        return f"{self._prefix}node:{node}".encode()

    def _raw_envelope(self, kind: str, line: bytes) -> bytes:
        """An envelope whose ``d`` is *line*, a JSON object already encoded."""
        return self._own + b'"k":' + orjson.dumps(kind) + b',"d":' + line + b"}"

    def _envelope(self, **fields: Any) -> bytes:
        return orjson.dumps({"o": self.node_id, **fields})

    def _publish(self, channel: bytes, envelope: bytes, on_reply: OnReply) -> None:
        self._publish_command(("PUBLISH", channel, envelope), on_reply)

    def _send_remote(self, client_id: str, envelope: bytes) -> None:
        self._publish_command(_eval(scripts.SEND, self._prefix, client_id, envelope), self._on_sent)

    def _publish_command(self, command: tuple[Any, ...], on_reply: OnReply) -> None:
        """Queue a command that publishes (dropped, and counted as lost, past the bound)."""
        if len(self._redis_queue) >= _MAX_QUEUED:
            self._count_lost(1, "the queue to Redis is full")
            return
        self._redis_queue.append((command, on_reply))
        self._wake_writer.set()

    def _write(
        self, command: tuple[Any, ...], on_reply: OnReply | None, *, first: bool = False
    ) -> None:
        """Queue a registry write (never dropped: the queue bound is for publishes); *first*
        puts it before everything queued, for what keeps no order with the rest."""
        if first:
            self._redis_queue.appendleft((command, on_reply))
        else:
            self._redis_queue.append((command, on_reply))
        self._wake_writer.set()

    def _presence(self, backend: Any, request: PresenceRequest) -> None:
        def answer(reply: Any) -> None:
            if isinstance(reply, BaseException) or type(reply) is not list:
                if isinstance(reply, RedisReplyError) or not isinstance(reply, RedisError):
                    logger.error("the presence query failed: %r", reply)
                backend.send(encode(self.local_presence(request, complete=False)))
                return
            members = tuple(
                BrokerMember(client_id=reply[i].decode(), node=reply[i + 1].decode())
                for i in range(0, len(reply) - 1, 2)
            )
            backend.send(
                encode(
                    PresenceReply(
                        request_id=request.request_id, room_id=request.room_id, members=members
                    )
                )
            )

        self._write(_eval(scripts.PRESENCE, self._prefix, request.room_id), answer)

    # ------------------------------------------------------------------ replies

    def _on_published(self, reply: Any) -> None:
        if type(reply) is int:
            self._published += 1
        else:
            self._failed(reply)

    def _on_room_published(self, reply: Any) -> None:
        if type(reply) is int:
            self._published += 1
            if reply == 0:  # no node has a member in that room, this one neither
                self.counters.unknown_targets += 1
        else:
            self._failed(reply)

    def _on_sent(self, reply: Any) -> None:
        if type(reply) is int:
            if reply > 0:
                self._published += 1
            else:  # unknown client, dead node, or its node not listening
                self._unknown += 1
                self.counters.unknown_targets += 1
        else:
            self._failed(reply)

    def _on_join(self, reply: Any) -> None:
        if reply == 1:
            self._replaced_remote += 1
        elif type(reply) is not int:
            self._on_registry_reply(reply)

    def _on_registry_reply(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            self._dirty = True
            self._synced = False
            if isinstance(reply, RedisReplyError):
                logger.error("a cluster registry script failed: %s", reply)

    def _failed(self, reply: Any) -> None:
        if isinstance(reply, RedisReplyError):
            logger.error("publishing to the cluster failed: %s", reply)
            self._count_lost(1, str(reply))
        else:
            self._count_lost(1, "Redis is unavailable")

    def _count_lost(self, count: int, why: str) -> None:
        self._lost += count
        if self._outage_lost is None:
            self._outage_lost = 0
            logger.warning(
                "node %s: cross-node messages are being lost (%s); they are counted, and "
                "delivery to other nodes resumes when Redis is back (at most once)",
                self.node_id,
                why,
            )
        self._outage_lost += count

    def _delivered_again(self) -> None:
        if self._outage_lost is not None:
            logger.info(
                "node %s: cross-node delivery works again; %d message(s) were lost meanwhile",
                self.node_id,
                self._outage_lost,
            )
            self._outage_lost = None

    # ------------------------------------------------------------------ from other nodes

    def _on_envelope(self, message: Message) -> None:
        data = message.data
        if data.startswith(self._own):
            return
        try:
            envelope = orjson.loads(data)
            text = envelope.get("m")
        except (orjson.JSONDecodeError, AttributeError):
            envelope = text = None
        channel = message.channel
        if channel.startswith(self._room_prefix) and type(text) is str:
            self._received += 1
            room = self._rooms.get(channel[len(self._room_prefix) :].decode(errors="replace"))
            if room is not None:
                self._deliver_all(list(room), text)
        elif channel == self._all_channel and type(text) is str:
            self._received += 1
            self._deliver_all(list(self._clients.values()), text)
        elif channel == self._node_channel and type(envelope) is dict:
            self._received += 1
            self._on_node_envelope(envelope, text)
        else:
            self._bad_envelopes += 1
            logger.warning("skipped a bad cluster message on %r: %r", channel, data[:200])

    def _on_node_envelope(self, envelope: dict[str, Any], text: Any) -> None:
        kind = envelope.get("k")
        if kind in ("ev", "resp", "gone"):
            self._on_forwarded(kind, envelope)
            return
        client = self._clients.get(envelope.get("c"))  # type: ignore[arg-type]
        if client is None:
            self.counters.unknown_targets += 1
        elif envelope.get("k") == "close":
            code, reason = envelope.get("code"), envelope.get("reason")
            if type(code) is int and type(reason) is str:
                if reason == _REPLACED:
                    self.counters.replaced += 1
                client.link.close(code, reason)
        elif type(text) is str and client.link.deliver(text):
            self.counters.messages_out += 1

    # ------------------------------------------------------------------ a node without backends
    # Its clients' events go to another node's backends, through that node's channel
    # (``ev``); the answer to a connection request comes back on this node's (``resp``, or
    # ``gone`` when that node has no backend any more). See docs/cluster.md.

    def _pick(self) -> Any:
        backend = super()._pick()
        if backend is not None or not self._backend_nodes:
            return backend
        nodes = sorted(self._backend_nodes)
        self._remote_turn = (self._remote_turn + 1) % len(nodes)
        node = nodes[self._remote_turn]
        remote = self._remote_backends.get(node)
        if remote is None:
            remote = self._remote_backends[node] = _RemoteBackend(self, node)
        return remote

    def add_backend(self, backend: Any) -> None:
        before = len(self._backends)
        super().add_backend(backend)
        if not before and self._backends:
            self._wake_keeper.set()  # tell the others at once

    def remove_backend(self, backend: Any) -> None:
        before = len(self._backends)
        super().remove_backend(backend)
        if before and not self._backends:
            self._wake_keeper.set()

    def _forward_event(self, node: str, data: bytes) -> None:
        """Send an event line to the backends of *node*."""
        self._forwarded += 1

        def on_reply(reply: Any) -> None:
            if reply == 0:  # nobody listens on its channel: the node is gone
                self._backend_nodes.discard(node)
                # Until its alive key expires, renewals would list it again: skip it.
                self._gone[node] = trio.current_time() + self.config.node_ttl
                logger.warning(
                    "node %s: an event sent to node %s found it gone", self.node_id, node
                )
                self._lost += 1
            else:
                self._on_published(reply)

        self._publish_command(
            ("PUBLISH", self._channel_of(node), self._raw_envelope("ev", data.rstrip(b"\n"))),
            on_reply,
        )

    def _on_forwarded(self, kind: Any, envelope: dict[str, Any]) -> None:
        line, origin = envelope.get("d"), envelope.get("o")
        if type(line) is not dict or type(origin) is not str:
            self._bad_envelopes += 1
            return
        if kind == "ev":
            self._forwarded_event(origin, line)
        elif kind == "resp":
            try:
                response = decode_line(orjson.dumps(line), Role.BROKER)
            except Exception:  # the peer's data: count it, never raise in the subscriber
                self._bad_envelopes += 1
                return
            if type(response) is Response:
                Hub.on_action(self, None, response)  # type: ignore[arg-type]
        else:  # "gone": the node we asked has no backend now: refuse (503) at once
            pending = self._pending.get(line.get("request_id"))  # type: ignore[arg-type]
            if pending is not None:
                pending.done.set()

    def _forwarded_event(self, origin: str, event: dict[str, Any]) -> None:
        """An event of another node's client, for our backends."""
        data = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        action = event.get("action")
        if action == "connection_request":
            request_id = event.get("request_id")
            backend = Hub._pick(self)
            if backend is None or type(request_id) is not str:
                envelope = self._raw_envelope("gone", orjson.dumps({"request_id": request_id}))
                self._publish_command(
                    ("PUBLISH", self._channel_of(origin), envelope), self._on_published
                )
                return
            self._remote_requests[request_id] = (origin, trio.current_time())
            backend.send(data)
            return
        params = event.get("params")
        context = params.get("context") if type(params) is dict else None
        client_id = context.get("client_id") if type(context) is dict else None
        pin = self._remote_pins.get(client_id)
        backend = pin[0] if pin is not None else None
        if backend is None or not backend.alive:
            backend = Hub._pick(self)
            if client_id is not None and backend is not None:
                self._remote_pins[client_id] = (backend, origin)
        if backend is None:
            self._enqueue(data)
        else:
            backend.send(data)
        if action == "disconnected":
            self._remote_pins.pop(client_id, None)

    def _prune_remote_requests(self) -> None:
        limit = trio.current_time() - 2 * self.config.request_timeout
        for request_id, (_, when) in list(self._remote_requests.items()):
            if when < limit:
                del self._remote_requests[request_id]

    def _prune_remote_pins(self, live_nodes: set[str]) -> None:
        """Forget the pins of other nodes' clients whose ``disconnected`` will never come:
        their node is gone from the cluster, or the backend they were pinned to is."""
        for client_id, (backend, origin) in list(self._remote_pins.items()):
            if origin not in live_nodes or not backend.alive:
                del self._remote_pins[client_id]

    # ------------------------------------------------------------------ tasks

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node's Redis side until cancelled (see the module's theory of operation).

        Returns from ``nursery.start`` once subscribed and registered, or, if Redis is
        unreachable, after ``node_ttl / 3`` without it: a node starts, and serves its own
        clients, while Redis is down.
        """
        config = self.config
        url = config.redis_url
        assert url is not None
        name = f"strands-broker-{self.node_id}"
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            self.redis = redis = await nursery.start(
                lambda task_status: serve_live_redis(url, client_name=name, task_status=task_status)
            )
            self.pubsub = pubsub = await nursery.start(
                lambda task_status: serve_live_pubsub(
                    url,
                    self._on_envelope,
                    on_connect=self._on_subscriber_connect,
                    client_name=f"{name}-sub",
                    task_status=task_status,
                )
            )
            await pubsub.subscribe(self._node_channel, self._all_channel)
            nursery.start_soon(self._write_loop, redis)
            nursery.start_soon(self._subscriptions, pubsub)
            ready = trio.Event()
            nursery.start_soon(self._keep_alive, ready)
            nursery.start_soon(self._watch_redis, redis)
            with trio.move_on_after(config.node_ttl / 3):
                await pubsub.wait_available()
                await ready.wait()
            if not ready.is_set():
                logger.warning(
                    "node %s: Redis at %s is unreachable; serving local clients meanwhile",
                    self.node_id,
                    redis.config.where,
                )
            logger.info("node %s joined the cluster %r", self.node_id, self._prefix)
            task_status.started()

    async def leave(self) -> None:
        """Leave the cluster gracefully: this node's registrations are deleted now rather
        than when its ``alive`` key expires (under the caller's deadline). Does nothing after
        :meth:`_crash` or while Redis is unreachable."""
        self._leaving = True
        if self._crashed or self.redis is None or not self.redis.available:
            return
        try:
            await self._call(_eval(scripts.SWEEP, self._prefix, self.node_id))
        except RedisError as exc:
            logger.warning("node %s could not deregister: %s", self.node_id, exc)
        else:
            logger.info("node %s left the cluster", self.node_id)

    def _crash(self) -> None:
        """For tests: stop talking to Redis at once, as a node that crashed would (its
        registrations stay until its ``alive`` key expires)."""
        self._crashed = True
        if self._scope is not None:
            self._scope.cancel()

    async def _call(self, command: tuple[Any, ...], *, first: bool = False) -> Any:
        """Queue *command* behind what is queued (before it, if *first*) and return its
        reply.

        Raises:
            RedisError: it failed (Redis unreachable, connection lost, error reply).
        """
        done = trio.Event()
        result: list[Any] = []

        def on_reply(reply: Any) -> None:
            result.append(reply)
            done.set()

        self._write(command, on_reply, first=first)
        await done.wait()
        reply = result[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _write_loop(self, redis: LiveRedis) -> None:
        queue = self._redis_queue
        while True:
            if not queue:
                self._wake_writer = trio.Event()
                await self._wake_writer.wait()
            count = min(len(queue), _BATCH)
            batch = [queue.popleft() for _ in range(count)]
            try:
                if count == 1:  # execute_many of one command returns its reply, not a list
                    try:
                        replies = [await redis.execute(*batch[0][0])]
                    except RedisReplyError as exc:
                        replies = [exc]
                else:
                    replies = await redis.execute_many([command for command, _ in batch])
            except RedisError as exc:
                replies = [exc] * count
            else:
                self._delivered_again()
            for (_, on_reply), reply in zip(batch, replies, strict=True):
                if on_reply is not None:
                    on_reply(reply)
            await trio.lowlevel.checkpoint()

    async def _keep_alive(self, ready: trio.Event) -> None:
        """Renew this node's alive key every ``node_ttl / 3`` (at once when Redis comes
        back), register the local clients again when needed, sweep dead nodes."""
        config = self.config
        ttl_ms = max(1, round(config.node_ttl * 1000))
        while True:
            self._wake_keeper = trio.Event()
            try:
                if self._leaving:  # a renewal after leave()'s sweep would resurrect the node
                    return
                # Ahead of queued publishes: under load, a renewal stuck behind them for
                # node_ttl would get this live node swept by the others.
                renewed = await self._call(
                    _eval(scripts.REFRESH, self._prefix, self.node_id, ttl_ms), first=True
                )
                if renewed == 0 and not self._dirty:
                    logger.warning(
                        "node %s: its registration was gone from Redis (restarted, flushed, "
                        "or this node was taken for dead): registering its clients again",
                        self.node_id,
                    )
                if renewed == 0 or self._dirty:
                    await self._resync()
                nodes = await self._call(
                    _eval(scripts.BACKENDS, self._prefix, self.node_id, len(self._backends))
                )
                now = trio.current_time()
                self._gone = {node: until for node, until in self._gone.items() if until > now}
                self._backend_nodes = {node.decode() for node in nodes} - self._gone.keys()
                self._prune_remote_requests()
                swept = await self._call(_eval(scripts.SWEEP, self._prefix, ""))
                if swept:
                    self._swept += swept
                    logger.warning(
                        "node %s: swept %d dead node(s) from the cluster", self.node_id, swept
                    )
                if self._remote_pins:
                    live = await self._call(("SMEMBERS", f"{self._prefix}nodes"))
                    self._prune_remote_pins({node.decode() for node in live})
                ready.set()
                self._synced = True
                self._step()
            except RedisError:
                pass  # unreachable: _watch_redis wakes us when it is back
            with trio.move_on_after(config.node_ttl / 3):
                await self._wake_keeper.wait()

    async def _resync(self) -> None:
        """Clear what this node had registered and register its current clients, in the
        queue's order (the snapshot is taken now, after every earlier join and leave)."""
        self._dirty = False
        self._resyncs += 1
        pairs: list[str] = []
        for client in self._clients.values():
            pairs += (client.client_id, client.room_id)
        self._write(_eval(scripts.RESYNC, self._prefix, self.node_id), self._on_registry_reply)
        chunk = 2 * _RESYNC_CHUNK
        for start in range(0, len(pairs), chunk):
            command = _eval(
                scripts.ADD_MANY, self._prefix, self.node_id, *pairs[start : start + chunk]
            )
            self._write(command, self._on_registry_reply)
        await self._call(("PING",))  # returns once all of it went through

    async def _watch_redis(self, redis: LiveRedis) -> None:
        while True:
            await redis.wait_lost()
            self._synced = False
            await redis.wait_available()
            self._wake_keeper.set()

    def _step(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def settle(self) -> None:
        """Return once this node is registered in Redis (since its last reconnection), its
        room subscriptions asked for so far are confirmed, and the writes queued so far have
        gone through: for tests and benchmarks, which must not publish before the nodes
        listen.

        Raises:
            RedisError: Redis is unreachable (at once), or was lost meanwhile.
        """
        while not self._synced or self._subscribing or self._to_subscribe or self._to_unsubscribe:
            if self.redis is not None and not self.redis.available:
                await self._call(("PING",))  # raises RedisUnavailable
            await self._progress.wait()
        await self._call(("PING",))

    def _on_subscriber_connect(self) -> None:
        self._wake_keeper.set()

    async def _subscriptions(self, pubsub: LivePubSub) -> None:
        prefix = self._room_prefix
        while True:
            if not (self._to_subscribe or self._to_unsubscribe):
                self._wake_subscriber = trio.Event()
                await self._wake_subscriber.wait()
            add, self._to_subscribe = self._to_subscribe, set()
            drop, self._to_unsubscribe = self._to_unsubscribe, set()
            self._subscribing = True
            if add:
                await pubsub.subscribe(*(prefix + room.encode() for room in add))
            if drop:
                await pubsub.unsubscribe(*(prefix + room.encode() for room in drop))
            self._subscribing = False
            self._step()

    # ------------------------------------------------------------------ figures

    def cluster_statistics(self) -> ClusterStatistics:
        """This node's cluster figures."""
        redis, pubsub = self.redis, self.pubsub
        sub = pubsub.statistics() if pubsub is not None else None
        return ClusterStatistics(
            node=self.node_id,
            redis_available=redis is not None and redis.available,
            subscriber_available=pubsub is not None and pubsub.available,
            published=self._published,
            received=self._received,
            lost=self._lost,
            dropped=sub.dropped if sub is not None else 0,
            unknown_targets=self._unknown,
            queued=len(self._redis_queue),
            resyncs=self._resyncs,
            swept_nodes=self._swept,
            replaced=self._replaced_remote,
            bad_messages=self._bad_envelopes,
            forwarded_events=self._forwarded,
        )

    def statistics(self) -> BrokerStatistics:
        """As :meth:`Hub.statistics`, with ``cluster`` set."""
        return attrs.evolve(super().statistics(), cluster=self.cluster_statistics())

    def health(self) -> dict[str, Any]:
        """``GET /healthz``, with the node id and whether Redis is reachable."""
        health = super().health()
        health["node"] = self.node_id
        health["redis"] = self.redis is not None and self.redis.available
        return health

    def metrics_text(self) -> str:
        """``GET /metrics``, with the cluster's figures."""
        s = self.cluster_statistics()
        counters = {
            "published": ("Messages published to other nodes", s.published),
            "received": ("Messages received from other nodes", s.received),
            "lost": ("Messages to other nodes lost (Redis unreachable or queue full)", s.lost),
            "dropped": ("Messages from other nodes dropped (this node too slow)", s.dropped),
            "resyncs": ("Times this node registered its clients again", s.resyncs),
            "swept_nodes": ("Dead nodes swept from the registry", s.swept_nodes),
        }
        lines = render(
            [
                gauge(
                    "cluster_redis_up", "Whether this node reaches Redis", int(s.redis_available)
                ),
                gauge("cluster_queued", "Commands waiting for Redis", s.queued),
            ]
            + [counter(f"cluster_{name}", text, value) for name, (text, value) in counters.items()]
        )
        return super().metrics_text() + "\n".join(lines) + "\n"


class _RemoteBackend:
    """Another node's backends, as this node's clients see them when it has none: what is
    sent to it is published on that node's channel."""

    __slots__ = ("hub", "name", "node")

    def __init__(self, hub: ClusterHub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.name = f"(backends of node {node})"

    @property
    def alive(self) -> bool:
        return self.node in self.hub._backend_nodes

    def send(self, data: bytes, *, check: bool = True) -> None:
        self.hub._forward_event(self.node, data)
