"""Where each client of the cluster is: this node's registrations in Redis, kept alive, made
again when Redis lost them, and the dead nodes' swept away.

Theory of operation. A client that connects here is registered with the ``JOIN`` script, in
``P clients`` (client -> node: where a private message goes), ``P presence:<room>`` (client ->
node: who is in a room) and ``P owned:<node>`` (client -> room: what this node registered, to
sweep it); ``LEAVE`` undoes that. ``JOIN`` also closes the client's older socket if another
live node held its id (a ``close`` envelope on that node's channel): an id reaches one socket
in the cluster. Both go through the writer's queue, so a join always precedes its leave.

Registrations name their node, and one key per node says whether it lives: ``P alive:<node>``,
with a time to live of ``node_ttl``, in the set ``P nodes``. The keeper is a
:class:`~strands_trio.redis.Membership` (the rounds, shared with
:class:`~strands_trio.middleware.RedisPresence`), run by :meth:`Registry.serve`; the registry
is its :class:`~strands_trio.redis.Registrations`. Every ``node_ttl / 3`` it renews the key
(``REFRESH``, at the head of the writer's queue), then:

- if the key was gone (Redis restarted empty, or this node was taken for dead) or some
  registry write failed (the node is *dirty*), clears what this node had registered and
  registers its current clients again (``RESYNC``, then ``ADD_MANY`` in chunks), in the
  queue's order: the snapshot is taken after every earlier join and leave was queued;
- records this node's number of backends and learns which other live nodes have some
  (``BACKENDS``; for ``_forwarding.py``, through :class:`RenewalListener`);
- sweeps every node of ``P nodes`` whose ``alive`` key is gone (``SWEEP``): its entries go
  (only those still pointing to it), then the node.

A lost connection to Redis makes the node unsynced; its return runs a round at once (so does
the subscriber's). Presence queries (``PRESENCE``) answer with the members on live nodes,
or, when Redis cannot be reached, with this node's own, marked incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

import attrs
import trio

from ...protocol import BrokerMember, PresenceReply, PresenceRequest
from ...redis import LiveRedis, Membership, RedisError, RedisReplyError
from .._config import BrokerConfig
from .._hub import REPLACED
from . import _scripts as scripts
from ._channels import Channels
from ._writer import Writer

__all__ = ["Registry", "RegistryHub", "RegistryStatistics", "RenewalListener"]

logger = logging.getLogger("strands_trio.broker.cluster")

#: Clients registered again per script call after an outage.
_RESYNC_CHUNK: Final = 500


class RegistryHub(Protocol):
    """What the registry needs of the hub (its public side)."""

    @property
    def backend_count(self) -> int: ...

    def local_clients(self) -> Iterator[tuple[str, str]]: ...

    def local_joined_rooms(self) -> Iterator[tuple[str, str]]: ...

    def local_presence(
        self, request: PresenceRequest, *, complete: bool = True
    ) -> PresenceReply: ...


class RenewalListener(Protocol):
    """Who learns, at each renewal, which nodes have backends and which live."""

    def backend_nodes_are(self, nodes: set[str]) -> None: ...

    def wants_live_nodes(self) -> bool: ...

    def live_nodes_are(self, live: set[str]) -> None: ...


@attrs.frozen(kw_only=True)
class RegistryStatistics:
    """The registry's figures (:meth:`Registry.statistics`).

    Attributes:
        synced: Whether this node is registered since its last reconnection.
        renewals: Renewals of this node's ``alive`` key that went through.
        resyncs: Times this node registered its clients again (start, Redis back).
        swept_nodes: Dead nodes whose registrations this node deleted.
        replaced: Clients of another node closed because their id connected here.
    """

    synced: bool
    renewals: int
    resyncs: int
    swept_nodes: int
    replaced: int


class Registry:
    """This node's registrations in Redis, and the keeper task (see the module's theory of
    operation).

    Args:
        hub: This node's hub.
        config: The broker's settings (``node_ttl``).
        channels: This node's key names and envelopes.
        writer: The queue to Redis.
        listener: Who learns which nodes have backends (forwarding).
        on_progress: Called when this node becomes synced again (for ``settle``).
    """

    def __init__(
        self,
        hub: RegistryHub,
        config: BrokerConfig,
        channels: Channels,
        writer: Writer,
        listener: RenewalListener,
        on_progress: Callable[[], None],
    ) -> None:
        self._hub = hub
        self._config = config
        self._channels = channels
        self._prefix = channels.prefix
        self._node = channels.node_id
        self._writer = writer
        self._listener = listener
        self._ttl_ms = max(1, round(config.node_ttl * 1000))
        self._redis: LiveRedis | None = None
        self._membership = Membership(
            self,
            ttl=config.node_ttl,
            who=f"node {self._node}",
            member="node",
            registered="clients",
            on_progress=on_progress,
        )
        self._replaced = 0

    # ------------------------------------------------------------------ joins and leaves

    def joined(self, client_id: str, room_id: str) -> None:
        """Register a client that connected here."""
        close = self._channels.envelope(k="close", c=client_id, code=1008, reason=REPLACED)
        command = scripts.call(scripts.JOIN, self._prefix, self._node, client_id, room_id, close)
        self._writer.write(command, self._on_join)

    def left(self, client_id: str, room_id: str) -> None:
        """Deregister a client that left."""
        command = scripts.call(scripts.LEAVE, self._prefix, self._node, client_id, room_id)
        self._writer.write(command, self._on_written)

    def room_joined(self, client_id: str, room_id: str) -> None:
        """Register a room a client of this node joined."""
        command = scripts.call(scripts.JOIN_ROOM, self._prefix, self._node, client_id, room_id)
        self._writer.write(command, self._on_written)

    def room_left(self, client_id: str, room_id: str) -> None:
        """Deregister a room a client of this node had joined (and left, or with itself)."""
        command = scripts.call(scripts.LEAVE_ROOM, self._prefix, self._node, client_id, room_id)
        self._writer.write(command, self._on_written)

    def _on_join(self, reply: Any) -> None:
        if reply == 1:
            self._replaced += 1
        elif type(reply) is not int:
            self._on_written(reply)

    def _on_written(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            self._membership.resync_needed()
            if isinstance(reply, RedisReplyError):
                logger.error("a cluster registry script failed: %s", reply)

    def presence(self, request: PresenceRequest, answer: Callable[[PresenceReply], None]) -> None:
        """Answer *request* with the room's members on every live node (this node's own,
        marked incomplete, if Redis cannot be reached)."""

        def on_reply(reply: Any) -> None:
            if isinstance(reply, BaseException) or type(reply) is not list:
                if isinstance(reply, RedisReplyError) or not isinstance(reply, RedisError):
                    logger.error("the presence query failed: %r", reply)
                answer(self._hub.local_presence(request, complete=False))
                return
            members = tuple(
                BrokerMember(client_id=reply[i].decode(), node=reply[i + 1].decode())
                for i in range(0, len(reply) - 1, 2)
            )
            answer(
                PresenceReply(
                    request_id=request.request_id, room_id=request.room_id, members=members
                )
            )

        self._writer.write(scripts.call(scripts.PRESENCE, self._prefix, request.room_id), on_reply)

    # ------------------------------------------------------------------ the keeper

    @property
    def synced(self) -> bool:
        """Whether this node is registered since its last reconnection to Redis."""
        return self._membership.synced

    def wake(self) -> None:
        """Run a keeper round now (Redis is back, the backends changed, ...)."""
        self._membership.request_round()

    async def wait_round(self) -> None:
        """Wake the keeper and return once a round started after this call has gone
        through (for tests: a renewal, learning the backends, a sweep, now)."""
        await self._membership.wait_round()

    async def wait_ready(self) -> None:
        """Return once the keeper's first round has gone through (this node registered)."""
        await self._membership.wait_ready()

    async def serve(
        self, redis: LiveRedis, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the keeper until cancelled (``nursery.start`` returns at once)."""
        self._redis = redis
        await self._membership.serve(redis, task_status=task_status)

    async def renew(self) -> bool:
        """The keeper's first step (:class:`~strands_trio.redis.Registrations`): renew this
        node's ``alive`` key, ahead of queued publications (under load, a renewal stuck
        behind them for ``node_ttl`` would get this live node swept by the others)."""
        refresh = scripts.call(scripts.REFRESH, self._prefix, self._node, self._ttl_ms)
        renewed: bool = await self._writer.call(refresh, first=True) == 1
        return renewed

    async def resync(self) -> int:
        """Clear what this node had registered and register its current clients, in the
        queue's order (the snapshot is taken now, after every earlier join and leave);
        return how many."""
        pairs: list[str] = []
        for client_id, room_id in self._hub.local_clients():
            pairs += (client_id, room_id)
        joined: list[str] = []
        for client_id, room_id in self._hub.local_joined_rooms():
            joined += (client_id, room_id)
        write, prefix, node = self._writer.write, self._prefix, self._node
        write(scripts.call(scripts.RESYNC, prefix, node), self._on_written)
        chunk = 2 * _RESYNC_CHUNK
        for script, args in ((scripts.ADD_MANY, pairs), (scripts.JOIN_ROOM, joined)):
            for start in range(0, len(args), chunk):
                command = scripts.call(script, prefix, node, *args[start : start + chunk])
                write(command, self._on_written)
        await self._writer.call(("PING",))  # returns once all of it went through
        return len(pairs) // 2

    async def sweep(self) -> int:
        """The keeper's last step: record this node's number of backends and learn which
        other live nodes have some; sweep the dead nodes; return how many."""
        call, prefix, node = self._writer.call, self._prefix, self._node
        count = self._hub.backend_count
        nodes = await call(scripts.call(scripts.BACKENDS, prefix, node, count))
        self._listener.backend_nodes_are({other.decode() for other in nodes})
        swept: int = await call(scripts.call(scripts.SWEEP, prefix, ""))
        if swept:
            logger.warning("node %s: swept %d dead node(s) from the cluster", node, swept)
        if self._listener.wants_live_nodes():
            live = await call(("SMEMBERS", self._channels.key("nodes")))
            self._listener.live_nodes_are({other.decode() for other in live})
        return swept

    # ------------------------------------------------------------------ leaving

    async def leave(self) -> None:
        """Delete this node's registrations now, rather than when its ``alive`` key expires,
        and renew it no more. Does nothing more than stop renewing while Redis is
        unreachable; logs, and returns, if it fails."""
        self._membership.stop()
        if self._redis is None or not self._redis.available:
            return
        try:
            await self._writer.call(scripts.call(scripts.SWEEP, self._prefix, self._node))
        except RedisError as exc:
            logger.warning("node %s could not deregister: %s", self._node, exc)
        else:
            logger.info("node %s left the cluster", self._node)

    # ------------------------------------------------------------------ figures

    def statistics(self) -> RegistryStatistics:
        """The registry's figures now."""
        membership = self._membership.statistics()
        return RegistryStatistics(
            synced=membership.synced,
            renewals=membership.renewals,
            resyncs=membership.resyncs,
            swept_nodes=membership.swept,
            replaced=self._replaced,
        )
