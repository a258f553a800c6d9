"""``RedisPresence``: one presence view shared by backend replicas, in Redis.

Theory of operation.

*Layout.* Under a prefix (``"strands:presence:"``): a hash per room (client id -> the
:class:`Member` as JSON, whose ``instance`` names its *owner*), a liveness key per instance,
and what reaping and races need; the table of keys, why a key per instance, who owns an
entry and what a leave that overtakes a join does are in ``_presence_scripts.py``.

*Nothing waits for Redis on the event path.* :meth:`RedisPresence.join`, ``leave`` and
``heal`` change this instance's state in memory and mark the client *dirty*; the task
:meth:`RedisPresence.serve` writes the dirty clients in batches (one script call for up to
``batch`` changes, each applied atomically). A query merges what Redis answers with the
changes not written yet, so a handler sees its own instance's changes at once; other
instances see them a round trip later.

*Liveness, restarts and outages* are a :class:`~strands_trio.redis.Membership`'s, the same
rounds as a broker cluster node's: every ``ttl / 3`` (and at once on a new connection) it
renews the liveness key (``REFRESH``, which also takes the removal notices), writes all the
members again if the key was missing (Redis restarted empty, or this instance could not
refresh for ``ttl``, and others may have reaped it), and reaps the dead (``SWEEP``); between
rounds, its task writes the dirty clients. While Redis is unreachable, changes pile up in
memory (one entry per client at most) and are written when it is back; the outage is logged
once (an :class:`~strands_trio.redis.OutageLog`) and counted. Queries raise
:class:`PresenceUnavailable` meanwhile.

*Joined rooms* (``join_room``) are entries of their own, keyed ``<client> NUL <room>``
(``_presence_joined.py``).

*When the broker restarts* (:meth:`RedisPresence.through`): this instance forgets its members
learnt through it at once; the script ``DROP`` removes every replica's from Redis, atomically
and idempotently (each replica that reconnects runs it; the later ones find nothing).

It needs a standalone Redis (or one shard): the scripts compute key names from their
arguments, which Redis Cluster forbids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import trio

from ._presence_joined import joined_key, merge_changes
from ._presence_redis_config import RedisPresenceStatistics, Settings
from ._presence_rounds import Rounds
from ._presence_scripts import HEAL, JOIN, LEAVE, REPUBLISH, Change, apply_ops, scripts
from ._presence_store import Member, PresenceUnavailable, _check_instance_id, _sort_key

if TYPE_CHECKING:
    from strands_trio.redis import LiveRedis, Script

__all__ = ["RedisPresence", "RedisPresenceStatistics"]

logger = logging.getLogger("strands_trio.middleware.presence")


class RedisPresence:
    """A presence store in Redis, shared by every backend replica that uses the same Redis
    and prefix (see the module docstring for how).

    Start its task next to the app, in the same nursery as the
    :class:`~strands_trio.redis.LiveRedis`::

        async with trio.open_nursery() as nursery:
            live = await nursery.start(serve_live_redis, "redis://redis:6379")
            store = RedisPresence(live, ttl=30.0)
            await nursery.start(store.serve)
            await nursery.start(make_app(Presence(store=store)).serve, "broker", 8081)

    Args:
        redis: The connection, kept up by :func:`~strands_trio.redis.serve_live_redis`.
        prefix: Put before every key, to share a Redis with other data or other apps.
        instance_id: This backend instance's name (:func:`default_instance_id`: unique per
            process start). Two live processes must never share one.
        ttl: Seconds after its last refresh that an instance's members disappear if it
            stops (crashes, loses Redis); it refreshes every ``ttl / 3``.
        batch: Changes written per script call (a republish of many members is split).

    Raises:
        TypeError: *redis* has no ``execute``, *prefix* is not a str, *ttl* not a number or
            *batch* not an int.
        ValueError: *prefix* or *instance_id* is empty, *ttl* is below 0.01 s or not finite,
            or *batch* is below 1 (or either is a bool).

    Resource handling: nothing runs until :meth:`serve` is started in a nursery; recording
    works without it (changes wait in memory, and a warning says so once), and queries work
    with only the :class:`~strands_trio.redis.LiveRedis`, for a process that only reads.
    Cancelling :meth:`serve` deletes nothing: the members of a stopped instance expire like
    those of a crashed one, and an instance that a client's events move to heals them on
    their next message.
    """

    def __init__(
        self,
        redis: LiveRedis,
        *,
        prefix: str = "strands:presence:",
        instance_id: str | None = None,
        ttl: float = 30.0,
        batch: int = 500,
    ) -> None:
        from strands_trio.redis import Membership, OutageLog  # the redis extra, from here on

        if not callable(getattr(redis, "execute", None)):
            raise TypeError(f"redis must be a LiveRedis (from serve_live_redis), got {redis!r}")
        Settings(prefix=prefix, ttl=ttl, batch=batch)
        self.ttl = float(ttl)
        self.instance_id = _check_instance_id(instance_id)
        self.prefix = prefix
        self._redis = redis
        self._batch = batch
        self._ttl_ms = max(1, round(self.ttl * 1000))
        self._scripts = scripts()
        # Local state: what this instance owns (member, the JSON it wrote), what it is
        # healing, who it trusts another live instance to hold (room, until trio time).
        self._owned: dict[str, tuple[Member, bytes]] = {}
        self._healing: dict[str, Member] = {}
        self._confirmed: dict[str, tuple[str, float]] = {}
        self._joined: dict[str, set[str]] = {}  # client -> the rooms it joined, owned here
        # Changes not written yet, client -> (kind, room, time of a leave); and those being
        # written.
        self._dirty: dict[str, Change] = {}
        self._inflight: dict[str, Change] = {}
        self._warned_not_serving = False
        self._written = self._deferred = self._query_failures = self._invalid = 0
        self._superseded = 0
        # Broker links: the one members are learnt through now, and the drops (broker name
        # -> its new instance) not yet run in Redis.
        self._via = ("", "")
        self._drops: dict[str, str] = {}
        self._dropped = self._drop_removed = 0
        who = f"presence {self.instance_id}"
        self._outage = OutageLog(
            logger,
            f"{who}: Redis",
            meanwhile="changes are kept in memory and written when it is back",
            counted="changes deferred",
        )
        rounds = Rounds(self)
        self._membership = Membership(
            rounds,
            ttl=self.ttl,
            who=who,
            member="instance",
            registered="members",
            writes=rounds,
            outage=self._outage,
        )

    def __repr__(self) -> str:
        return f"<RedisPresence {self.instance_id!r} prefix={self.prefix!r} ttl={self.ttl:g}>"

    @property
    def liveness_key(self) -> str:
        """This instance's liveness key, ``<prefix>alive:<instance>``, whose expiry ends its
        members."""
        return f"{self.prefix}alive:{self.instance_id}"

    # ------------------------------------------------------------------ recording (sync)

    def join(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        member = self._member(client_id, room, fields)
        self._owned[client_id] = (member, member.to_json())
        self._healing.pop(client_id, None)
        self._confirmed.pop(client_id, None)
        self._mark(client_id, JOIN, room)

    def heal(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        if self.knows(client_id, room):
            return
        self._owned.pop(client_id, None)
        self._confirmed.pop(client_id, None)
        self._healing[client_id] = self._member(client_id, room, fields)
        self._mark(client_id, HEAL, room)

    def leave(self, client_id: str, room: str) -> None:
        owned, healing = self._owned.get(client_id), self._healing.get(client_id)
        current = owned[0].room if owned is not None else healing and healing.room
        if current and current != room:  # a late leave of an earlier connection elsewhere
            return
        self._owned.pop(client_id, None)
        self._healing.pop(client_id, None)
        self._confirmed.pop(client_id, None)
        self._mark(client_id, LEAVE, room, time.time())
        for joined in self._joined.pop(client_id, ()):
            self._owned.pop(joined_key(client_id, joined), None)
            self._mark(joined_key(client_id, joined), LEAVE, joined, time.time())

    def join_room(self, client_id: str, room: str) -> None:
        key, home = joined_key(client_id, room), self._owned.get(client_id)
        if key in self._owned or (home is not None and home[0].room == room):
            return
        member = self._member(client_id, room, home[0].fields if home is not None else {})
        self._owned[key] = (member, member.to_json())
        self._joined.setdefault(client_id, set()).add(room)
        self._mark(key, JOIN, room)

    def leave_room(self, client_id: str, room: str) -> None:
        rooms = self._joined.get(client_id)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._joined[client_id]
        key = joined_key(client_id, room)
        self._owned.pop(key, None)
        self._mark(key, LEAVE, room, time.time())

    def knows(self, client_id: str, room: str) -> bool:
        owned = self._owned.get(client_id)
        if owned is not None:
            return owned[0].room == room
        healing = self._healing.get(client_id)
        if healing is not None:
            return healing.room == room
        confirmed = self._confirmed.get(client_id)
        return confirmed is not None and confirmed[0] == room and confirmed[1] > trio.current_time()

    def through(self, broker: str, instance: str) -> int:
        """See :meth:`~strands_trio.middleware.BrokerAwareStore.through`: forgotten here at
        once, removed from Redis (every replica's) by the next write."""
        self._via = (broker, instance)
        self._drops[broker] = instance
        gone = [c for c, (m, _) in self._owned.items() if _stale(m, broker, instance)]
        gone += [c for c, m in self._healing.items() if _stale(m, broker, instance)]
        for client_id in gone:
            self._owned.pop(client_id, None)
            self._healing.pop(client_id, None)
            self._dirty.pop(client_id, None)
        self._confirmed = {}  # trusted entries of others may be among the dropped
        self._dropped += len(gone)
        self._membership.wake()
        return len(gone)

    def _member(self, client_id: str, room: str, fields: Mapping[str, str]) -> Member:
        return Member(
            client_id=client_id,
            room=room,
            instance=self.instance_id,
            joined_at=time.time(),
            fields=dict(fields),
            broker=self._via[0],
            broker_instance=self._via[1],
        )

    def _mark(self, client_id: str, kind: str, room: str, when: float = 0.0) -> None:
        self._dirty.pop(client_id, None)  # to the end: written after what came before
        self._dirty[client_id] = (kind, room, when)
        membership, outage = self._membership, self._outage
        if (outage.on or not self._redis.available) and membership.renewed:
            self._deferred += 1
            if not outage.on:
                outage.failed("no connection")
            outage.count()
        if not membership.serving and not self._warned_not_serving:
            self._warned_not_serving = True
            logger.warning(
                "presence %s: RedisPresence.serve() is not running: changes are kept in memory "
                "and not written to Redis; start it with nursery.start(store.serve)",
                self.instance_id,
            )
        membership.wake()

    # ------------------------------------------------------------------ queries

    async def members(self, room: str) -> list[Member]:
        """The members of *room*, oldest first: what Redis holds from live instances, with
        this instance's changes not yet written applied over it.

        Raises:
            PresenceUnavailable: Redis is unreachable (the answer would be only this
                instance's part; :meth:`local_members` gives that, knowingly).
        """
        # The changes not written when the question is sent: the writer may finish writing
        # them before this task reads the answer, which Redis gave before their write.
        before, drops = {**self._inflight, **self._dirty}, dict(self._drops)
        values = await self._query(self._scripts.members, room)
        found: dict[str, Member] = {}
        for value in values:
            member = self._decode(value)
            if member is not None:
                drop = drops.get(member.broker)
                if drop is None or member.broker_instance == drop:  # else: a drop to run
                    found[member.client_id] = member
        # The latest change of each entry decides, read against the state now.
        changes = {**before, **self._inflight, **self._dirty}
        merge_changes(found, changes, self._owned, self._healing, room, self.instance_id, LEAVE)
        return sorted(found.values(), key=_sort_key)

    async def count(self, room: str) -> int:
        """How many members *room* has (as :meth:`members`).

        Raises:
            PresenceUnavailable: Redis is unreachable.
        """
        return len(await self.members(room))

    async def rooms(self) -> dict[str, int]:
        """Every room with live members, and how many, as written in Redis (changes not
        written yet are not counted). It reads every entry: for dashboards, not per event.

        Raises:
            PresenceUnavailable: Redis is unreachable.
        """
        flat = await self._query(self._scripts.rooms)
        return {
            bytes(flat[i]).decode(errors="replace"): int(flat[i + 1])
            for i in range(0, len(flat), 2)
        }

    def local_members(self, room: str) -> list[Member]:
        """The members of *room* that this instance owns or is healing, without asking
        Redis: a partial answer, for when :meth:`members` raises."""
        found = [m for m, _ in self._owned.values() if m.room == room]
        found += [m for m in self._healing.values() if m.room == room]
        return sorted(found, key=_sort_key)

    async def _query(self, script: Script, *args: str) -> list[Any]:
        from strands_trio.redis import RedisError

        try:
            reply = await script(self._redis, args=[self.prefix, *args])
        except RedisError as exc:
            self._query_failures += 1
            raise PresenceUnavailable(f"presence: cannot ask Redis: {exc}") from exc
        return cast(list[Any], reply)

    def _decode(self, value: bytes) -> Member | None:
        try:
            return Member.from_json(value)
        except ValueError as exc:
            self._invalid += 1
            logger.debug("presence: skipped an entry that is not a member: %s", exc)
            return None

    # ------------------------------------------------------------------ the task

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write changes to Redis and refresh this instance's liveness until cancelled;
        ``await nursery.start(store.serve)`` returns at once, whether Redis is up or not.

        Redis being unreachable is never an error here: the outage is logged once and
        counted, changes wait in memory, and everything is written (and, if Redis lost it,
        republished) when the connection is back.

        Raises:
            RuntimeError: it is already running.
        """
        await self._membership.serve(self._redis, task_status=task_status)

    async def wait_synced(self) -> None:
        """Return once every change recorded before the call is in Redis and a refresh
        (with its removal notices and reaping) has completed after it. Waits as long as
        Redis is unreachable: the caller owns the deadline.

        Raises:
            RuntimeError: :meth:`serve` is not running.
        """
        if not self._membership.serving:
            raise RuntimeError(f"{self!r} is not serving: start nursery.start(store.serve)")
        await self._membership.wait_synced()

    # ------------------------------------------------------------------ the rounds' steps

    async def _renew(self) -> bool:
        existed, notices = await self._scripts.refresh(
            self._redis, args=[self.prefix, self.instance_id, self._ttl_ms]
        )
        for value in notices:
            self._forget(bytes(value))
        now = trio.current_time()
        self._confirmed = {c: v for c, v in self._confirmed.items() if v[1] > now}
        return bool(existed)

    def _forget(self, value: bytes) -> None:
        """Another instance removed this instance's entry *value*: forget it, unless it
        was recorded again since (then *value* is not what this instance holds)."""
        member = self._decode(value)
        if member is None:
            return
        for key in (member.client_id, joined_key(member.client_id, member.room)):
            owned = self._owned.get(key)
            if owned is not None and owned[1] == value:
                del self._owned[key]
                if key != member.client_id:
                    self._joined.get(member.client_id, set()).discard(member.room)
                change = self._dirty.get(key)
                if change is not None and change[0] in (JOIN, REPUBLISH):
                    del self._dirty[key]

    def _resync(self) -> int:
        """Mark every member this instance owns to be written again (its key was gone)."""
        for client_id, (member, _) in self._owned.items():
            if client_id not in self._dirty:
                self._dirty[client_id] = (REPUBLISH, member.room, 0.0)
        return len(self._owned)

    async def _drop(self) -> None:
        broker, instance = next(iter(self._drops.items()))
        args: list[str | int] = [self.prefix, self.instance_id, self._ttl_ms * 10, broker]
        removed: int = await self._scripts.drop(self._redis, args=[*args, instance])
        if self._drops.get(broker) == instance:  # not a newer instance meanwhile
            del self._drops[broker]
        self._drop_removed += removed
        if removed:
            logger.info("presence: removed %d entries of broker %s before it restarted",
                        removed, broker)  # fmt: skip

    async def _flush(self) -> None:
        if self._drops:  # before any write: what follows is learnt through the new instance
            await self._drop()
            return
        batch: dict[str, Change] = {}
        while self._dirty and len(batch) < self._batch:
            client_id = next(iter(self._dirty))
            batch[client_id] = self._dirty.pop(client_id)
        ops, plan = apply_ops(batch, self._owned, self._healing)
        args = [self.prefix, self.instance_id, self._ttl_ms * 10, self._ttl_ms, *ops]
        self._inflight = batch
        # Trust an entry held by another instance until its key could expire, counted from
        # before the call: never later than Redis's own expiry.
        sent = trio.current_time()
        try:
            results = await self._scripts.apply(self._redis, args=args)
        except BaseException:
            for client_id, change in batch.items():
                if client_id not in self._dirty:
                    self._dirty[client_id] = change
            raise
        finally:
            self._inflight = {}
        self._written += len(plan)
        for (client_id, kind, state), result in zip(plan, results, strict=True):
            if result < 0:
                self._superseded += 1
            if kind == HEAL:
                member = self._healing.get(client_id)
                if member is None or member is not state:
                    continue  # left or joined meanwhile: that change decides
                del self._healing[client_id]
                if result == 0:
                    self._owned[client_id] = (member, member.to_json())
                elif result > 0:
                    self._confirmed[client_id] = (member.room, sent + result / 1000)
            elif kind != LEAVE and result != 0:
                owned = self._owned.get(client_id)
                if owned is not None and owned is state:
                    # The client left after this was recorded (< 0), or another live
                    # instance healed it while this one was lapsed (> 0): not ours.
                    del self._owned[client_id]
                    if result > 0:
                        self._confirmed[client_id] = (owned[0].room, sent + result / 1000)

    def statistics(self) -> RedisPresenceStatistics:
        """Counters and state (see :class:`RedisPresenceStatistics`)."""
        m = self._membership.statistics()
        return RedisPresenceStatistics(
            available=self._redis.available,
            serving=m.serving,
            members=len(self._owned),
            pending=len(self._dirty) + len(self._inflight),
            written=self._written,
            refreshes=m.renewals,
            lapses=m.lapses,
            republished=m.resynced,
            reaped=m.swept,
            outages=self._outage.statistics().outages,
            deferred=self._deferred,
            query_failures=self._query_failures,
            invalid=self._invalid,
            superseded=self._superseded,
            dropped=self._dropped,
            drop_removed=self._drop_removed,
        )


def _stale(member: Member, broker: str, instance: str) -> bool:
    """Whether *member* was learnt through *broker* with an instance other than *instance*."""
    return member.broker == broker and member.broker_instance != instance
