"""``RedisPresence``: one presence view shared by backend replicas, in Redis.

Theory of operation.

*Layout.* Under a prefix ``P`` (``"strands:presence:"``), for rooms and instances:

==========================  ====================================================================
``P room:<room>``           hash: client id -> the :class:`Member` as JSON (its ``instance``
                            says which backend instance recorded it, its *owner*)
``P alive:<instance>``      string with an expiry of ``ttl``: the instance is alive while it
                            exists; the instance sets it again every ``ttl / 3``
``P instance:<instance>``   hash: client id -> room, for every member the instance owns
``P removed:<instance>``    list: members of the instance that another instance removed
``P left:<client>``         string with an expiry of ``ttl``: when the client last left
``P rooms``, ``P instances``  sets: rooms with entries, instances that have been alive
==========================  ====================================================================

*Why an expiring key per instance* rather than a sorted set scored by expiry per member: an
instance proves it is alive with one ``SET ... PX`` every ``ttl / 3``, whatever the number of
its members, where scores would need every member rewritten as often. The price is paid on
reads: a query keeps only the entries whose owner's key exists (one ``EXISTS`` per distinct
owner, in the same Lua script as the ``HGETALL``). So the members of an instance that dies
drop out of every answer at most ``ttl`` after its last refresh, which is the bounded time
the issue asks for. Their entries are then deleted by the next refresh of any live instance
(*reaping*, through the dead instance's own ``instance:`` hash), so Redis does not fill up
with the dead.

*Nothing waits for Redis on the event path.* :meth:`RedisPresence.join`, ``leave`` and
``heal`` change this instance's state in memory and mark the client *dirty*; the task
:meth:`RedisPresence.serve` writes the dirty clients in batches (one script call for up to
``batch`` changes, each applied atomically) and refreshes the liveness key. A query merges
what Redis answers with the changes not written yet, so a handler sees its own instance's
changes at once; other instances see them a round trip later.

*Ownership.* A client's entry belongs to the instance that wrote it: at its
``new_connection``, or when it healed it. Any instance may remove it (the reference broker
sends each event to a backend chosen at random, so a ``disconnected`` often reaches another
instance than the ``new_connection`` did); the remover pushes the entry onto the owner's
``removed:`` list, and the owner forgets it at its next refresh, so that it never writes it
back. Healing takes over an entry only if it is missing or its owner is dead: an entry held
by a live instance is left alone, and this instance trusts it until that owner's key would
expire (the script returns its ``PTTL``), then checks again at the client's next message.

*A leave that overtakes a join.* With events spread over instances, a ``disconnected`` at one
instance may be written before the ``new_connection`` that another instance recorded
earlier; written after it, that entry would stay for as long as its owner lives. So a leave
leaves a mark (``left:``, for ``ttl``) with its time, and a write of a member whose
``joined_at`` is not later than the mark is refused: its owner forgets it. A client that
reconnects with the same id joins after the mark and is written; this needs the instances'
clocks to agree better than the time a client takes to reconnect.

*Redis restarts and outages.* Every refresh sets the liveness key with ``GET``: if it was
missing (Redis restarted empty, or this instance could not refresh for ``ttl``, and others
may have reaped it), the instance writes all its members again. While Redis is unreachable,
changes pile up in memory (one entry per client at most) and are written when it is back;
the outage is logged once and counted. Queries raise :class:`PresenceUnavailable` meanwhile.

It needs a standalone Redis (or one shard): the scripts compute key names from their
arguments, which Redis Cluster forbids.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import attrs
import trio

from ._presence import (
    Member,
    PresenceUnavailable,
    _check_instance_id,
    _sort_key,
    check_seconds,
)
from ._presence_scripts import APPLY, MEMBERS, REFRESH, ROOMS

if TYPE_CHECKING:
    from strands_trio.redis import LiveRedis, Redis, Script

__all__ = ["RedisPresence", "RedisPresenceStatistics"]

logger = logging.getLogger("strands_trio.middleware.presence")

# Kinds of pending change: written as, and answered by, the APPLY script (_presence_scripts).
_JOIN: Final = "j"  # new_connection: write, taking the entry over from anyone
_HEAL: Final = "h"  # a message from an unknown client: write if missing or owner dead
_REPUBLISH: Final = "r"  # an owned member after a lapse: as _HEAL, with its stored JSON
_LEAVE: Final = "l"  # disconnected: delete, whoever owns it

#: A change not written yet: (kind, room, the time of a leave).
_Change = tuple[str, str, float]


@attrs.frozen(kw_only=True)
class RedisPresenceStatistics:
    """A snapshot of a :class:`RedisPresence` (:meth:`RedisPresence.statistics`).

    Attributes:
        available: Whether Redis is reachable now.
        serving: Whether :meth:`RedisPresence.serve` is running.
        members: Members this instance owns (recorded, or healed, and not removed).
        pending: Changes recorded and not yet written to Redis.
        written: Changes written to Redis.
        refreshes: Liveness refreshes done.
        lapses: Refreshes that found this instance's liveness key gone (Redis restarted, or
            no refresh for ``ttl``): each was followed by a republish.
        republished: Members written again after a lapse.
        reaped: Entries of dead instances this instance deleted.
        outages: Times Redis became unreachable (each logged once).
        deferred: Changes recorded while Redis was unreachable (written when it came back).
        query_failures: Queries that raised :class:`PresenceUnavailable`.
        invalid: Entries in Redis that were not members (skipped).
        superseded: Writes refused because the client had left since, as another instance
            recorded (the member is forgotten here too).
    """

    available: bool
    serving: bool
    members: int
    pending: int
    written: int
    refreshes: int
    lapses: int
    republished: int
    reaped: int
    outages: int
    deferred: int
    query_failures: int
    invalid: int
    superseded: int


class _Counters:
    def __init__(self) -> None:
        self.written = self.refreshes = self.lapses = self.republished = self.reaped = 0
        self.outages = self.deferred = self.query_failures = self.invalid = 0
        self.superseded = 0


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
        TypeError: *ttl* is not a number, or *redis* has no ``execute``.
        ValueError: *prefix* or *instance_id* is empty, *ttl* is below 0.01 s or not finite,
            or *batch* is below 1.

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
        from strands_trio.redis import Backoff, Script  # the redis extra, needed from here on

        if not callable(getattr(redis, "execute", None)):
            raise TypeError(f"redis must be a LiveRedis (from serve_live_redis), got {redis!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.ttl = check_seconds("ttl", ttl, 0.01)
        self.instance_id = _check_instance_id(instance_id)
        self.prefix = prefix
        self._redis = redis
        self._batch = batch
        self._ttl_ms = max(1, round(self.ttl * 1000))
        self._interval = self.ttl / 3
        self._backoff = Backoff()
        self._apply = Script(APPLY)
        self._refresh_script = Script(REFRESH)
        self._members_script = Script(MEMBERS)
        self._rooms_script = Script(ROOMS)
        # Local state: what this instance owns (member, the JSON it wrote), what it is
        # healing, who it trusts another live instance to hold (room, until trio time).
        self._owned: dict[str, tuple[Member, bytes]] = {}
        self._healing: dict[str, Member] = {}
        self._confirmed: dict[str, tuple[str, float]] = {}
        # Changes not written yet, client -> (kind, room, time of a leave); and those being
        # written.
        self._dirty: dict[str, _Change] = {}
        self._inflight: dict[str, _Change] = {}
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._serving = False
        self._warned_not_serving = False
        self._stale = True
        self._refresh_wanted = False
        self._refreshes_started = 0
        self._refreshed = 0
        self._outage_since: float | None = None
        self._counters = _Counters()

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
        self._mark(client_id, _JOIN, room)

    def heal(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        if self.knows(client_id, room):
            return
        self._owned.pop(client_id, None)
        self._confirmed.pop(client_id, None)
        self._healing[client_id] = self._member(client_id, room, fields)
        self._mark(client_id, _HEAL, room)

    def leave(self, client_id: str, room: str) -> None:
        owned, healing = self._owned.get(client_id), self._healing.get(client_id)
        current = owned[0].room if owned is not None else healing and healing.room
        if current and current != room:  # a late leave of an earlier connection elsewhere
            return
        self._owned.pop(client_id, None)
        self._healing.pop(client_id, None)
        self._confirmed.pop(client_id, None)
        self._mark(client_id, _LEAVE, room, time.time())

    def knows(self, client_id: str, room: str) -> bool:
        owned = self._owned.get(client_id)
        if owned is not None:
            return owned[0].room == room
        healing = self._healing.get(client_id)
        if healing is not None:
            return healing.room == room
        confirmed = self._confirmed.get(client_id)
        return confirmed is not None and confirmed[0] == room and confirmed[1] > trio.current_time()

    def _member(self, client_id: str, room: str, fields: Mapping[str, str]) -> Member:
        return Member(
            client_id=client_id,
            room=room,
            instance=self.instance_id,
            joined_at=time.time(),
            fields=dict(fields),
        )

    def _mark(self, client_id: str, kind: str, room: str, when: float = 0.0) -> None:
        self._dirty.pop(client_id, None)  # to the end: written after what came before
        self._dirty[client_id] = (kind, room, when)
        if self._counters.refreshes and (
            self._outage_since is not None or not self._redis.available
        ):
            self._counters.deferred += 1
        if not self._serving and not self._warned_not_serving:
            self._warned_not_serving = True
            logger.warning(
                "presence %s: RedisPresence.serve() is not running: changes are kept in memory "
                "and not written to Redis; start it with nursery.start(store.serve)",
                self.instance_id,
            )
        self._wake.set()

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
        before = {**self._inflight, **self._dirty}
        values = await self._query(self._members_script, room)
        found: dict[str, Member] = {}
        for value in values:
            member = self._decode(value)
            if member is not None:
                found[member.client_id] = member
        # The latest change of each client decides, read against the state now.
        for client_id, (kind, changed_room, _) in {
            **before,
            **self._inflight,
            **self._dirty,
        }.items():
            owned = self._owned.get(client_id)
            here = owned[0] if owned is not None else self._healing.get(client_id)
            if here is not None:
                if here.room != room:
                    mine = found.get(client_id)
                    if mine is not None and mine.instance == self.instance_id:
                        del found[client_id]  # moved to another room
                elif owned is not None:
                    found[client_id] = here
                else:
                    found.setdefault(client_id, here)  # healing: an owner may have it
            elif kind == _LEAVE and changed_room == room:
                found.pop(client_id, None)
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
        flat = await self._query(self._rooms_script)
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
            reply = await script(cast("Redis", self._redis), args=[self.prefix, *args])
        except RedisError as exc:
            self._counters.query_failures += 1
            raise PresenceUnavailable(f"presence: cannot ask Redis: {exc}") from exc
        return cast(list[Any], reply)

    def _decode(self, value: bytes) -> Member | None:
        try:
            return Member.from_json(value)
        except ValueError as exc:
            self._counters.invalid += 1
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
        if self._serving:
            raise RuntimeError(f"{self!r} is already serving")
        self._serving = True
        self._stale = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_connections)
                nursery.start_soon(self._run)
                task_status.started()
        finally:
            self._serving = False
            self._notify()

    async def wait_synced(self) -> None:
        """Return once every change recorded before the call is in Redis and a refresh
        (with its removal notices and reaping) has completed after it. Waits as long as
        Redis is unreachable: the caller owns the deadline.

        Raises:
            RuntimeError: :meth:`serve` is not running.
        """
        if not self._serving:
            raise RuntimeError(f"{self!r} is not serving: start nursery.start(store.serve)")
        target = self._refreshes_started + 1
        self._refresh_wanted = True
        self._wake.set()
        while not (
            self._refreshed >= target and not self._dirty and not self._inflight and not self._stale
        ):
            if not self._serving:
                raise RuntimeError(f"{self!r} stopped serving")
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _watch_connections(self) -> None:
        """Wakes the writer on every new connection: Redis may have restarted empty."""
        live = self._redis
        while True:
            await live.wait_available()
            self._stale = True
            self._wake.set()
            await live.wait_lost()

    async def _run(self) -> None:
        from strands_trio.redis import RedisConnectionError, RedisReplyError

        next_refresh = -math.inf
        delays = self._backoff.delays()
        while True:
            due = self._stale or self._refresh_wanted or trio.current_time() >= next_refresh
            if not due and not self._dirty:
                with trio.move_on_at(next_refresh):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            if not self._counters.refreshes and not self._redis.available:
                await self._redis.wait_available()  # starting: not an outage of ours
            connects = self._redis.statistics().connects
            try:
                if due:
                    await self._refresh(connects)
                    next_refresh = trio.current_time() + self._interval
                if self._dirty:
                    await self._flush()
            except RedisConnectionError as exc:
                self._failed(exc)
                await self._reconnected(connects)
            except RedisReplyError as exc:
                self._failed(exc)
                await trio.sleep(next(delays))
            else:
                delays = self._backoff.delays()
            self._notify()

    async def _reconnected(self, connects: int) -> None:
        live = self._redis
        if live.available and live.statistics().connects == connects:
            await live.wait_lost()  # the lost connection is not marked lost yet
        await live.wait_available()

    def _failed(self, exc: Exception) -> None:
        self._stale = True
        if self._outage_since is None:
            self._outage_since = trio.current_time()
            self._counters.outages += 1
            logger.warning(
                "presence %s: cannot write to Redis (%s); %d changes kept, written when it is back",
                self.instance_id,
                exc,
                len(self._dirty),
            )
        else:
            logger.debug("presence %s: still cannot write to Redis: %s", self.instance_id, exc)

    async def _refresh(self, connects: int) -> None:
        self._refresh_wanted = False
        self._refreshes_started += 1
        number = self._refreshes_started
        reply = await self._refresh_script(
            cast("Redis", self._redis), args=[self.prefix, self.instance_id, self._ttl_ms]
        )
        existed, reaped, notices = reply
        first = self._counters.refreshes == 0
        self._counters.refreshes += 1
        self._counters.reaped += reaped
        for value in notices:
            self._forget(bytes(value))
        if not existed:
            self._lapsed(first=first)
        if self._redis.statistics().connects == connects:
            self._stale = False
        now = trio.current_time()
        self._confirmed = {c: v for c, v in self._confirmed.items() if v[1] > now}
        self._refreshed = number
        if self._outage_since is not None:
            logger.info(
                "presence %s: Redis is back after %.2f s; writing %d changes",
                self.instance_id,
                trio.current_time() - self._outage_since,
                len(self._dirty),
            )
            self._outage_since = None

    def _forget(self, value: bytes) -> None:
        """Another instance removed this instance's entry *value*: forget it, unless it
        was recorded again since (then *value* is not what this instance holds)."""
        member = self._decode(value)
        if member is None:
            return
        owned = self._owned.get(member.client_id)
        if owned is not None and owned[1] == value:
            del self._owned[member.client_id]
            change = self._dirty.get(member.client_id)
            if change is not None and change[0] in (_JOIN, _REPUBLISH):
                del self._dirty[member.client_id]

    def _lapsed(self, *, first: bool) -> None:
        if not first:
            self._counters.lapses += 1
            logger.warning(
                "presence %s: this instance's liveness key had expired (Redis restarted, or no "
                "refresh for %g s): writing its %d members again",
                self.instance_id,
                self.ttl,
                len(self._owned),
            )
            self._counters.republished += len(self._owned)
        for client_id, (member, _) in self._owned.items():
            if client_id not in self._dirty:
                self._dirty[client_id] = (_REPUBLISH, member.room, 0.0)

    async def _flush(self) -> None:
        batch: dict[str, _Change] = {}
        while self._dirty and len(batch) < self._batch:
            client_id = next(iter(self._dirty))
            batch[client_id] = self._dirty.pop(client_id)
        args: list[str | bytes | int] = [
            self.prefix,
            self.instance_id,
            self._ttl_ms * 10,
            self._ttl_ms,
        ]
        plan: list[tuple[str, str, Any]] = []
        for client_id, (kind, room, when) in batch.items():
            if kind == _LEAVE:
                args += [_LEAVE, client_id, room, repr(when)]
                plan.append((client_id, kind, None))
            elif kind == _HEAL:
                member = self._healing.get(client_id)
                if member is not None:
                    args += [_HEAL, client_id, room, member.to_json()]
                    plan.append((client_id, kind, member))
            else:
                owned = self._owned.get(client_id)
                if owned is not None:
                    op = _JOIN if kind == _JOIN else _REPUBLISH
                    args += [op, client_id, owned[0].room, owned[1]]
                    plan.append((client_id, kind, owned))
        self._inflight = batch
        # Trust an entry held by another instance until its key could expire, counted from
        # before the call: never later than Redis's own expiry.
        sent = trio.current_time()
        try:
            results = await self._apply(cast("Redis", self._redis), args=args)
        except BaseException:
            for client_id, change in batch.items():
                if client_id not in self._dirty:
                    self._dirty[client_id] = change
            raise
        finally:
            self._inflight = {}
        self._counters.written += len(plan)
        for (client_id, kind, state), result in zip(plan, results, strict=True):
            if result < 0:
                self._counters.superseded += 1
            if kind == _HEAL:
                member = self._healing.get(client_id)
                if member is None or member is not state:
                    continue  # left or joined meanwhile: that change decides
                del self._healing[client_id]
                if result == 0:
                    self._owned[client_id] = (member, member.to_json())
                elif result > 0:
                    self._confirmed[client_id] = (member.room, sent + result / 1000)
            elif kind != _LEAVE and result != 0:
                owned = self._owned.get(client_id)
                if owned is not None and owned is state:
                    # The client left after this was recorded (< 0), or another live
                    # instance healed it while this one was lapsed (> 0): not ours.
                    del self._owned[client_id]
                    if result > 0:
                        self._confirmed[client_id] = (owned[0].room, sent + result / 1000)

    def statistics(self) -> RedisPresenceStatistics:
        """Counters and state (see :class:`RedisPresenceStatistics`)."""
        c = self._counters
        return RedisPresenceStatistics(
            available=self._redis.available,
            serving=self._serving,
            members=len(self._owned),
            pending=len(self._dirty) + len(self._inflight),
            written=c.written,
            refreshes=c.refreshes,
            lapses=c.lapses,
            republished=c.republished,
            reaped=c.reaped,
            outages=c.outages,
            deferred=c.deferred,
            query_failures=c.query_failures,
            invalid=c.invalid,
            superseded=c.superseded,
        )
