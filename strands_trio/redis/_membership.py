"""``Membership``: a process's registrations in a Redis shared by many, kept alive, made again
when Redis lost them, and the dead processes' swept away; with writes behind, in one task.

Theory of operation. Several processes (broker nodes, backend instances) each register things
in one Redis (clients, presence members) under their *member* id. Each proves it is alive with
one key, ``<prefix>alive:<member>``, whose time to live is ``ttl``, renewed every ``ttl / 3``,
and is listed in a set of members (``<prefix>nodes``, ``<prefix>instances``): what a member
registered counts only while its key exists, and whoever finds a member of the set without one
deletes what it had registered. That is the same for the broker cluster and
:class:`~strands_trio.middleware.RedisPresence`; the data each registers, and the Lua that
writes and clears it, are their own. So a :class:`Membership` runs the rounds, and asks its
owner's :class:`Registrations` (a port of three calls) to do each step, in this order:

1. :meth:`Registrations.renew`: set the key again, ``SET ... PX ttl GET`` in the owner's
   script (the Lua function ``renew`` of :data:`LIVENESS_LUA`), which says whether it was
   still there;
2. :meth:`Registrations.resync`, when it was not (Redis restarted empty or was flushed, or the
   member was taken for dead and swept), at the first round, and after the owner called
   :meth:`Membership.resync_needed` (a registration failed): register everything again. A
   key found missing after the first round is a *lapse*, logged at WARNING;
3. :meth:`Registrations.sweep`: clear the members whose key has expired (the Lua function
   ``sweep``), and whatever else the owner does once a round.

A round runs every ``ttl / 3``, at once on every new connection (Redis may have restarted
empty), and when asked (:meth:`Membership.request_round`, :meth:`Membership.wait_round`).
Between rounds, the same task writes what the owner's :class:`PendingWrites` holds, if it was
given one: writes behind, so that no event waits for Redis; a round and a write never overlap.

Failures are Redis's to have, never an error here: when a step raises
:class:`~strands_trio.redis.RedisConnectionError` the task waits for the next connection, then
runs a round; when it raises :class:`~strands_trio.redis.RedisReplyError` it tries again after
a backoff delay. An :class:`~strands_trio.redis.OutageLog`, if given, logs the outage once,
from the first failure to the next round that goes through. A round that waits for the first
connection at start is no outage.

Cancellation: :meth:`Membership.serve` runs until cancelled and deletes nothing then: the
member's registrations expire with its key, as a crashed member's do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final, NoReturn, Protocol

import attrs
import trio

from .._backoff import Backoff
from .._validators import POSITIVE
from ._errors import RedisConnectionError, RedisReplyError
from ._live import LiveRedis
from ._outage import OutageLog

__all__ = [
    "LIVENESS_LUA",
    "Membership",
    "MembershipStatistics",
    "PendingWrites",
    "Registrations",
]

logger = logging.getLogger("strands_trio.redis")

_BACKOFF = Backoff()

#: The Lua functions of a membership, to put before an owner's script: ``renew(prefix,
#: members_key, member, ttl_ms)`` sets ``prefix .. "alive:" .. member`` for *ttl_ms*, adds
#: *member* to the set *members_key*, and returns whether the key was still there;
#: ``sweep(prefix, members_key, clear)`` calls ``clear(member)`` for each member of the set
#: whose ``alive`` key is gone, removes it from the set, and returns how many. Needs Redis 6.2
#: (``SET ... GET``).
LIVENESS_LUA: Final = """
local function renew(prefix, members_key, member, ttl)
  local existed = redis.call('SET', prefix .. 'alive:' .. member, '1', 'PX', ttl, 'GET')
  redis.call('SADD', members_key, member)
  return existed ~= false
end
local function sweep(prefix, members_key, clear)
  local swept = 0
  for _, member in ipairs(redis.call('SMEMBERS', members_key)) do
    if redis.call('EXISTS', prefix .. 'alive:' .. member) == 0 then
      clear(member)
      redis.call('SREM', members_key, member)
      swept = swept + 1
    end
  end
  return swept
end
"""


class Registrations(Protocol):
    """What a :class:`Membership` asks of its owner at each round. Each step may raise
    :class:`~strands_trio.redis.RedisError`: the round is then over, and tried again."""

    async def renew(self) -> bool:
        """Renew this member's ``alive`` key; return whether it was still there."""
        ...

    async def resync(self) -> int:
        """Register again everything this member holds; return how many things."""
        ...

    async def sweep(self) -> int:
        """Clear what members whose ``alive`` key expired registered; return how many (of
        whatever the owner counts)."""
        ...


class PendingWrites(Protocol):
    """Writes that a :class:`Membership`'s task makes between rounds (writes behind)."""

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written, or is being written."""
        ...

    async def flush(self) -> None:
        """Write some of it (one batch); raise :class:`~strands_trio.redis.RedisError` if it
        could not, keeping what was not written."""
        ...


@attrs.frozen(kw_only=True)
class _Settings:
    ttl: float = attrs.field(validator=POSITIVE)


@attrs.frozen(kw_only=True)
class MembershipStatistics:
    """A snapshot of a :class:`Membership` (:meth:`Membership.statistics`).

    Attributes:
        serving: Whether :meth:`Membership.serve` is running.
        synced: Whether a round went through on the connection up now, and no registration
            failed since.
        renewals: Renewals of the ``alive`` key that went through.
        resyncs: Times everything was registered again (start, lapses, failed writes).
        lapses: Renewals that found the key gone, after the first.
        resynced: What was registered again after lapses.
        swept: What the sweeps cleared (as :meth:`Registrations.sweep` counts).
    """

    serving: bool
    synced: bool
    renewals: int
    resyncs: int
    lapses: int
    resynced: int
    swept: int


class Membership:
    """Keeps one member's registrations alive in Redis (see the module's theory of
    operation).

    Args:
        registrations: The owner's steps of a round.
        ttl: Seconds the ``alive`` key lives; a round runs every ``ttl / 3``.
        who: What the log lines start with (``"node a"``, ``"presence a"``).
        member: What a member is, for a lapse's warning (``"node"``, ``"instance"``).
        registered: What :meth:`Registrations.resync` counts (``"clients"``).
        writes: Writes to make between rounds, if any.
        outage: Logs an outage of the rounds and writes, if given.
        on_progress: Called after each round or write, and when the connection is lost.
        backoff: Delays before trying again after an error reply.

    Raises:
        ValueError: *ttl* is not positive and finite.
    """

    def __init__(
        self,
        registrations: Registrations,
        *,
        ttl: float,
        who: str,
        member: str,
        registered: str,
        writes: PendingWrites | None = None,
        outage: OutageLog | None = None,
        on_progress: Callable[[], None] | None = None,
        backoff: Backoff = _BACKOFF,
    ) -> None:
        _Settings(ttl=ttl)
        self._registrations = registrations
        self.ttl = ttl
        self._who, self._member, self._registered = who, member, registered
        self._writes = writes
        self._outage = outage
        self._on_progress = on_progress
        self._backoff = backoff
        self._redis: LiveRedis | None = None
        self._serving = False
        self._stopped = False
        #: The connection (``connects``) the last round went through on; None: none since a
        #: failure.
        self._synced_on: int | None = None
        self._resync = True  # nothing registered yet
        self._wanted = False
        self._wake = trio.Event()
        self._started = self._done = 0  # rounds started; the last one that went through
        self._round_done = trio.Event()
        self._renewals = self._resyncs = self._lapses = self._resynced = self._swept = 0

    # ------------------------------------------------------------------ the owner's side

    @property
    def serving(self) -> bool:
        """Whether :meth:`serve` is running."""
        return self._serving

    @property
    def renewed(self) -> bool:
        """Whether a renewal ever went through."""
        return self._renewals > 0

    @property
    def synced(self) -> bool:
        """Whether a round went through on the connection up now, and no registration failed
        since."""
        redis = self._redis
        return (
            redis is not None
            and redis.available
            and not self._resync
            and self._synced_on == redis.statistics().connects
        )

    def wake(self) -> None:
        """Something waits to be written: write it now."""
        self._wake.set()

    def request_round(self) -> None:
        """Run a round now (the backends changed, a subscriber reconnected ...)."""
        self._wanted = True
        self._wake.set()

    def resync_needed(self) -> None:
        """A registration failed: register everything again at the next round."""
        self._resync = True

    def stop(self) -> None:
        """Renew no more (the member leaves): a round under way finishes, no other starts."""
        self._stopped = True

    async def wait_round(self) -> None:
        """Run a round now and return once a round started after this call went through.
        Waits as long as Redis is unreachable: the caller owns the deadline.

        Raises:
            RuntimeError: :meth:`serve` is not running, or stopped meanwhile.
        """
        target = self._started + 1
        self.request_round()
        await self._wait_done(target)

    async def wait_synced(self) -> None:
        """Run a round now and return once it went through, and every write pending before
        the call is written: what this member holds is in Redis. Waits as long as Redis is
        unreachable: the caller owns the deadline.

        Raises:
            RuntimeError: :meth:`serve` is not running, or stopped meanwhile.
        """
        await self.wait_round()
        writes = self._writes
        while (writes is not None and writes.pending) or not self.synced:
            if not self._serving:
                raise RuntimeError(f"{self._who}: the membership stopped serving")
            await self._round_done.wait()

    async def wait_ready(self) -> None:
        """Return once a round has gone through since this membership was made.

        Raises:
            RuntimeError: :meth:`serve` is not running, or stopped meanwhile.
        """
        await self._wait_done(1)

    async def _wait_done(self, target: int) -> None:
        while self._done < target:
            if not self._serving:
                raise RuntimeError(f"{self._who}: the membership is not serving")
            await self._round_done.wait()

    def statistics(self) -> MembershipStatistics:
        """The rounds' figures now (see :class:`MembershipStatistics`)."""
        return MembershipStatistics(
            serving=self._serving,
            synced=self.synced,
            renewals=self._renewals,
            resyncs=self._resyncs,
            lapses=self._lapses,
            resynced=self._resynced,
            swept=self._swept,
        )

    # ------------------------------------------------------------------ the task

    async def serve(
        self, redis: LiveRedis, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the rounds and the writes on *redis* until cancelled; ``nursery.start``
        returns at once, whether Redis is reachable or not.

        Raises:
            RuntimeError: it is already running.
        """
        if self._serving:
            raise RuntimeError(f"{self._who}: the membership is already serving")
        self._serving = True
        self._redis = redis
        self._synced_on = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, redis)
                nursery.start_soon(self._run, redis)
                task_status.started()
        finally:
            self._serving = False
            self._progress()

    async def _watch(self, redis: LiveRedis) -> NoReturn:
        """Wakes the task on every new connection (Redis may have restarted empty), and tells
        the owner when one is lost."""
        while True:
            await redis.wait_available()
            self._wake.set()
            await redis.wait_lost()
            self._progress()

    async def _run(self, redis: LiveRedis) -> NoReturn:
        next_round = -math.inf
        delays = self._backoff.delays()
        writes = self._writes
        while True:
            connects = redis.statistics().connects
            due = self._wanted or self._synced_on != connects or trio.current_time() >= next_round
            if not due and not (writes is not None and writes.pending):
                with trio.move_on_at(next_round):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            if not self._renewals and not redis.available:
                await redis.wait_available()  # starting: not an outage
                continue
            if self._stopped:  # a renewal after the owner's leave would bring it back
                await trio.sleep_forever()
            try:
                if due:
                    await self._round(redis, connects)
                    next_round = trio.current_time() + self.ttl / 3
                if writes is not None and writes.pending:
                    await writes.flush()
            except RedisConnectionError as exc:
                self._failed(exc)
                await _reconnected(redis, connects)
            except RedisReplyError as exc:
                self._failed(exc)
                await trio.sleep(next(delays))
            else:
                delays = self._backoff.delays()
            self._progress()

    async def _round(self, redis: LiveRedis, connects: int) -> None:
        self._wanted = False
        self._started += 1
        number = self._started
        registrations = self._registrations
        existed = await registrations.renew()
        first = self._renewals == 0
        self._renewals += 1
        if not existed or self._resync:
            self._resync = False
            count = await registrations.resync()
            self._resyncs += 1
            if not existed and not first:
                self._lapses += 1
                self._resynced += count
                logger.warning(
                    "%s: this %s's liveness key was gone (Redis restarted or flushed, or no "
                    "renewal for %g s): registering its %d %s again",
                    self._who,
                    self._member,
                    self.ttl,
                    count,
                    self._registered,
                )
        self._swept += await registrations.sweep()
        if redis.statistics().connects == connects:
            self._synced_on = connects
        self._done = number
        if self._outage is not None:
            self._outage.ended()

    def _failed(self, exc: Exception) -> None:
        self._synced_on = None
        if self._outage is not None:
            self._outage.failed(exc)

    def _progress(self) -> None:
        self._round_done.set()
        self._round_done = trio.Event()
        if self._on_progress is not None:
            self._on_progress()


async def _reconnected(redis: LiveRedis, connects: int) -> None:
    """Return once a connection newer than *connects* is up."""
    if redis.available and redis.statistics().connects == connects:
        await redis.wait_lost()  # the lost connection is not marked lost yet
    await redis.wait_available()
