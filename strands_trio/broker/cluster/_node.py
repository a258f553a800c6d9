"""``ClusterNode``: a broker node that reaches the clients of the other nodes through Redis.

Theory of operation. A broker started with ``BrokerConfig.redis_url`` composes its hub with a
:class:`ClusterNode` (``serve_broker`` calls ``hub.join_cluster(node)``): the node implements
the hub's :class:`~.._ports.ClusterPort`, so the hub tells it about local joins and leaves and
hands it what has no local target, and it calls back only the hub's public methods
(``deliver_*``, ``close_client``, ``local_clients``, ``local_presence``, ``pick_backend``,
``enqueue``, ``complete_admission``, ``fail_admission``, ``count_unknown_target``). With ``P``
the ``cluster_prefix``, Redis holds:

====================== =================================================================
``P alive:<node>``      a node's sign of life: a key with a time to live of ``node_ttl``,
                        renewed every third of it
``P nodes``             the set of nodes that registered and were not swept yet
``P clients``           hash client id -> node: where a private message goes
``P presence:<room>``   hash client id -> node: who is in a room, for presence queries
``P owned:<node>``      hash client id -> room: what a node registered, to sweep it
``P joined:<node>``     hash client id NUL room -> room: the rooms a node's clients joined
                        (``join_room``), to sweep them
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

The node is four parts, each in its module, each with its own figures; this class wires them
and composes their figures into :class:`~.._ports.ClusterStatistics`::

    Hub ──ClusterPort──> ClusterNode
                          ├── Registry    (_registry.py)   joins, leaves, presence; the keeper:
                          │                                renew alive, resync, sweep, learn
                          │                                which nodes have backends
                          ├── Relay       (_relay.py)      publish actions for other nodes;
                          │                                deliver theirs here; room channels
                          ├── Forwarding  (_forwarding.py) a node without backends uses
                          │                                another's (ev, resp, gone)
                          └── Writer      (_writer.py)     the one ordered queue to Redis,
                                                           scripts by SHA1 (_scripts.py)

Delivery across nodes is at most once: while Redis is unreachable each node serves its own
clients as a single broker would, and what it should have published is counted as lost and
logged once per outage. When Redis is back (or whenever this node's ``alive`` key was missing)
the registry registers the node's clients again; the subscriber subscribes again by itself.

Tasks, in :meth:`ClusterNode.serve`, which ``serve_broker`` runs around its other services::

    serve()
    ├── serve_live_redis          the command connection, reconnected with backoff
    ├── serve_live_pubsub         the subscriber: Relay.on_message (sync, quick); a new
    │                             connection wakes the keeper
    ├── Writer.serve              the queue -> pipelines
    ├── Relay.serve_subscriptions SUBSCRIBE/UNSUBSCRIBE room channels as rooms come and go
    └── Registry.serve            the keeper (a Membership), and a watcher: Redis back
                                  runs a round at once

The scripts compute key names from the prefix, so the cluster needs one Redis (a primary,
with replicas or Sentinel if wanted), not a Redis Cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from ...protocol import PresenceReply, PresenceRequest, Response
from ...redis import LivePubSub, LiveRedis, serve_live_pubsub, serve_live_redis
from .._config import BrokerConfig
from .._hub import Hub
from .._ports import BackendPort, ClusterStatistics
from .._prometheus import Metric, counter, gauge
from . import _scripts as scripts
from ._channels import Channels
from ._forwarding import Forwarding
from ._registry import Registry
from ._relay import Relay
from ._writer import Writer

__all__ = ["ClusterNode"]

logger = logging.getLogger("strands_trio.broker.cluster")


class ClusterNode:
    """One node of a broker cluster: the hub's :class:`~.._ports.ClusterPort`, and the tasks
    of its Redis side (:meth:`serve`). See the module's theory of operation.

    Args:
        hub: This broker's hub (``hub.join_cluster(node)`` is the caller's to do).
        config: The broker's settings; ``config.redis_url`` must be set.

    Raises:
        ValueError: ``config.redis_url`` is not set.
    """

    def __init__(self, hub: Hub, config: BrokerConfig) -> None:
        if config.redis_url is None:
            raise ValueError("a ClusterNode needs config.redis_url")
        self._hub = hub
        self._config = config
        #: This node's id (the hub's).
        self.node_id = hub.node_id
        self._channels = channels = Channels(config.cluster_prefix, hub.node_id)
        self._progress = trio.Event()
        self._writer = writer = Writer(hub.node_id, scripts.ALL)
        self._forwarding = forwarding = Forwarding(hub, config, channels, writer)
        self._relay = Relay(hub, channels, writer, forwarding, self._step)
        self._registry = Registry(hub, config, channels, writer, forwarding, self._step)
        self._backends = hub.backend_count
        self._crashed = False
        self._scope: trio.CancelScope | None = None
        #: The command connection, once :meth:`serve` has started.
        self.redis: LiveRedis | None = None
        #: The subscriber connection, once :meth:`serve` has started.
        self.pubsub: LivePubSub | None = None

    # ------------------------------------------------------------------ ClusterPort

    def joined(self, client_id: str, room_id: str, *, room_created: bool) -> None:
        """A client connected here: register it (and listen to its room's channel)."""
        if room_created:
            self._relay.room_created(room_id)
        self._registry.joined(client_id, room_id)

    def left(self, client_id: str, room_id: str, *, room_emptied: bool) -> None:
        """A client left: deregister it (and stop listening to an emptied room)."""
        if room_emptied:
            self._relay.room_emptied(room_id)
        self._registry.left(client_id, room_id)

    def room_joined(self, client_id: str, room_id: str, *, room_created: bool) -> None:
        """A client of this node joined another room: register it (and listen to the room's
        channel)."""
        if room_created:
            self._relay.room_created(room_id)
        self._registry.room_joined(client_id, room_id)

    def room_left(self, client_id: str, room_id: str, *, room_emptied: bool) -> None:
        """A client of this node left a room it had joined: deregister it (and stop
        listening to an emptied room)."""
        if room_emptied:
            self._relay.room_emptied(room_id)
        self._registry.room_left(client_id, room_id)

    def room_action(self, client_id: str, room_id: str, *, join: bool) -> None:
        """Make a client of another node join or leave a room."""
        self._relay.room_action(client_id, room_id, join=join)

    def room_message(self, room_id: str, message: str, *, local_members: bool) -> None:
        """Publish a room message for the other nodes' members."""
        self._relay.room_message(room_id, message, local_members=local_members)

    def private_message(self, client_id: str, message: str) -> None:
        """Send a message to a client of another node."""
        self._relay.private_message(client_id, message)

    def broadcast(self, message: str) -> None:
        """Publish a broadcast for the other nodes' clients."""
        self._relay.broadcast(message)

    def close_client(self, client_id: str, code: int, reason: str) -> None:
        """Close a client of another node."""
        self._relay.close_client(client_id, code, reason)

    def presence(self, request: PresenceRequest, answer: Callable[[PresenceReply], None]) -> None:
        """Answer a presence query for the whole cluster."""
        self._registry.presence(request, answer)

    def response(self, response: Response) -> bool:
        """Send the answer to another node's forwarded connection request back to it."""
        return self._forwarding.response(response)

    def remote_backend(self) -> BackendPort | None:
        """Another node's backends, for this node's events while it has none."""
        return self._forwarding.remote_backend()

    def backends_changed(self, count: int) -> None:
        """This node's number of backends changed: tell the others at once when it goes to
        or from zero."""
        before, self._backends = self._backends, count
        if (before == 0) != (count == 0):
            self._registry.wake()

    # ------------------------------------------------------------------ running

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node's Redis side until cancelled (see the module's theory of operation).

        Returns from ``nursery.start`` once subscribed and registered, or, if Redis is
        unreachable, after ``node_ttl / 3`` without it: a node starts, and serves its own
        clients, while Redis is down.

        Cancellation: cancelling stops every task of the node at once, without
        deregistering; call :meth:`leave` first for that.
        """
        config = self._config
        url = config.redis_url
        assert url is not None
        name = f"strands-broker-{self.node_id}"
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            redis: LiveRedis = await nursery.start(partial(serve_live_redis, url, client_name=name))
            self.redis = redis
            pubsub: LivePubSub = await nursery.start(
                partial(
                    serve_live_pubsub,
                    url,
                    self._relay.on_message,
                    on_connect=self._registry.wake,
                    on_idle=self._relay.on_idle,
                    client_name=f"{name}-sub",
                )
            )
            self.pubsub = pubsub
            await pubsub.subscribe(self._channels.node, self._channels.all)
            nursery.start_soon(self._writer.serve, redis)
            nursery.start_soon(self._relay.serve_subscriptions, pubsub)
            await nursery.start(self._registry.serve, redis)
            ready = False
            with trio.move_on_after(config.node_ttl / 3):
                await pubsub.wait_available()
                await self._registry.wait_ready()
                ready = True
            if not ready:
                logger.warning(
                    "node %s: Redis at %s is unreachable; serving local clients meanwhile",
                    self.node_id,
                    redis.config.where,
                )
            logger.info("node %s joined the cluster %r", self.node_id, config.cluster_prefix)
            task_status.started()

    async def leave(self) -> None:
        """Leave the cluster gracefully: this node's registrations are deleted now rather
        than when its ``alive`` key expires (under the caller's deadline), and no longer
        renewed. Needs :meth:`serve` still running; does nothing after :meth:`_crash` or while
        Redis is unreachable."""
        if self._crashed:
            return
        await self._registry.leave()

    def _crash(self) -> None:
        """For tests: stop talking to Redis at once, as a node that crashed would (its
        registrations stay until its ``alive`` key expires)."""
        self._crashed = True
        if self._scope is not None:
            self._scope.cancel()

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
        while not (self._registry.synced and self._relay.subscribed):
            if self.redis is not None and not self.redis.available:
                await self._writer.call(("PING",))  # raises RedisUnavailable
            await self._progress.wait()
        await self._writer.call(("PING",))

    async def renew(self) -> None:
        """Run the keeper's round now and return once it has gone through: this node's
        ``alive`` key renewed, the nodes with backends learnt, the dead nodes swept (for
        tests, rather than waiting ``node_ttl / 3``)."""
        await self._registry.wait_round()

    @property
    def backend_nodes(self) -> frozenset[str]:
        """The other live nodes this node knows to have backends."""
        return self._forwarding.backend_nodes

    # ------------------------------------------------------------------ figures

    def statistics(self) -> ClusterStatistics:
        """This node's figures about its cluster, composed of its parts'."""
        redis, pubsub = self.redis, self.pubsub
        writer = self._writer.statistics()
        relay = self._relay.statistics()
        registry = self._registry.statistics()
        forwarding = self._forwarding.statistics()
        return ClusterStatistics(
            node=self.node_id,
            redis_available=redis is not None and redis.available,
            subscriber_available=pubsub is not None and pubsub.available,
            published=relay.published + forwarding.published,
            received=relay.received,
            lost=writer.lost + forwarding.lost,
            dropped=pubsub.statistics().dropped if pubsub is not None else 0,
            unknown_targets=relay.unknown_targets,
            queued=writer.queued,
            resyncs=registry.resyncs,
            swept_nodes=registry.swept_nodes,
            replaced=registry.replaced,
            bad_messages=relay.bad_messages + forwarding.bad_messages,
            forwarded_events=forwarding.forwarded_events,
        )

    def health(self) -> dict[str, Any]:
        """The node's part of ``GET /healthz``: its id, and whether it reaches Redis."""
        return {"node": self.node_id, "redis": self.redis is not None and self.redis.available}

    def metrics(self) -> list[Metric]:
        """The node's part of ``GET /metrics``."""
        s = self.statistics()
        w = self._writer.statistics()
        counters = {
            "published": ("Messages published to other nodes", s.published),
            "received": ("Messages received from other nodes", s.received),
            "lost": ("Messages to other nodes lost (Redis unreachable or queue full)", s.lost),
            "dropped": ("Messages from other nodes dropped (this node too slow)", s.dropped),
            "unknown_targets": ("Private messages and closes for a client no live node has",
                                s.unknown_targets),
            "resyncs": ("Times this node registered its clients again", s.resyncs),
            "swept_nodes": ("Dead nodes swept from the registry", s.swept_nodes),
            "replaced": ("Clients of other nodes closed because their id connected here",
                         s.replaced),
            "bad_messages": ("Messages on the cluster's channels not understood",
                             s.bad_messages),
            "forwarded_events": ("Events sent to another node's backends", s.forwarded_events),
            "script_loads": ("Times the cluster's scripts were loaded into Redis",
                             w.script_loads),
            "script_retries": ("Script calls sent again with EVAL after Redis forgot them",
                               w.script_retries),
        }  # fmt: skip
        return [
            gauge("cluster_redis_up", "Whether this node reaches Redis", int(s.redis_available)),
            gauge("cluster_queued", "Commands waiting for Redis", s.queued),
            *(counter(f"cluster_{name}", text, value) for name, (text, value) in counters.items()),
        ]
