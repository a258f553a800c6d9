"""The rate limiter's store on Redis: one bucket per key for every backend replica.

Theory of operation. :class:`RedisStore` runs the in-memory store's algorithm
(:func:`~strands_trio.middleware.gcra`) inside Redis, as one Lua script per hit (``EVALSHA``
through :class:`~strands_trio.redis.Script`, which sends the body again after ``NOSCRIPT``).
Redis runs one script at a time, so a hit reads the key's TAT, decides and writes the new TAT
atomically, and replicas hitting the same key share one bucket: a limit of 10 per second holds
for a client whichever replica its messages reach.

- *The same algorithm, in integers.* The script counts time in quanta of 2**-20 s, the grid
  the memory store keeps its floats on, as integers: ``now``, the TAT, the interval and the
  tolerance are integers of quanta, and every sum, difference and comparison is the one
  :func:`~strands_trio.middleware.gcra` makes. Lua numbers are doubles, exact for integers up
  to 2**53 quanta (2**33 s): a TAT is at most ``now + burst * interval``, and :class:`Rate`
  caps ``burst * interval`` at 2**32 s, so everything stays exact while Redis's clock reads
  below 2**33 s minus the longest bucket: the year 2106 for the longest a Rate allows, about
  2242 for buckets that span days rather than centuries. So a hit decided in Redis gets the
  very :class:`Decision` the memory store would give at the same instant: the tests drive
  both with the same times and compare.
- *Redis's clock.* ``now`` is Redis's ``TIME``, read in the script, never a replica's clock:
  replicas whose clocks disagree (skew, an NTP step, a container's drift) still agree on
  every bucket, and a TAT is only ever compared with the clock that wrote it. (Redis runs
  scripts by their effects, so ``TIME`` in a script that writes is allowed and replicas of
  Redis itself get the write, not the call.)
- *Keys.* ``prefix + key`` (by default ``strands:rl:``; :class:`RateLimit` adds ``m:`` or
  ``c:``: ``strands:rl:m:<client id>``), a string holding the TAT in quanta as a decimal
  integer, written with ``PX`` set to the moment the bucket is empty again (rounded up to the
  millisecond, plus 2 ms for the distance between the script's ``TIME`` and the clock Redis
  expires keys by). An empty bucket is exactly a key never seen, so an expired key loses
  nothing, and Redis holds only the keys of clients that hit recently. A refused hit writes
  nothing.

When Redis cannot answer (:class:`~strands_trio.redis.RedisUnavailable` while the
:class:`~strands_trio.redis.LiveRedis` reconnects, a connection lost during the call, or no
reply within *timeout*), the hit is answered by the configured policy: ``"allow_local"``
decides it in this process's :class:`MemoryStore` (each replica then enforces the limit on
its own share of the traffic, so a client spread over N replicas gets up to N times its
limit), ``"refuse"`` refuses it. An *outage* is logged once when it starts (WARNING) and once
when a hit reaches Redis again (INFO, with how long it lasted and how many hits the policy
answered), by an :class:`~strands_trio.redis.OutageLog`; while one is on, a single hit at a
time goes to Redis to find out whether it is over, and the others are answered by the policy
at once, so a Redis that hangs delays one hit per *timeout*, not every hit. An error reply
(``WRONGTYPE`` because something else wrote the key, a script error) is answered by the
policy too and logged at ERROR, at most once a minute with a count of the others: it is a bug
or a misconfiguration, not an outage, and does not hold up other keys. Nothing is raised to the
middleware but cancellation.

Two consequences to know. A Redis without persistence forgets every bucket when it restarts:
each client gets a fresh burst then. And a hit that timed out may still have been counted
by Redis (the client drops its late reply): a slow Redis errs on the strict side.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final, Literal

import attrs
import trio

from strands_trio.redis import (
    LiveRedis,
    OutageLog,
    RedisConnectionError,
    RedisReplyError,
    RedisUnavailable,
    Script,
)

from ._ratelimit_store import QUANTUM, Decision, MemoryStore, Rate, _decision

__all__ = ["RedisStore", "RedisStoreStatistics"]

logger = logging.getLogger("strands_trio.middleware.ratelimit")

_POLICIES: Final = ("allow_local", "refuse")
#: A refusal for want of Redis says to retry in one interval, or this many seconds if sooner.
_REFUSED_RETRY_AFTER = 1.0
#: Error replies are logged at most once per this many seconds (the others are counted).
_ERROR_LOG_PERIOD = 60.0
_PER_SECOND = 1 / QUANTUM  # quanta per second, 2**20

#: KEYS[1]: the key. ARGV[1]: the interval and ARGV[2]: the tolerance ((burst - 1) *
#: interval), in quanta. ARGV[3], for tests only: now, in quanta, instead of Redis's TIME;
#: then the key gets no expiry, since Redis expires keys by its own clock, not by that one.
#: Replies {allowed (0 or 1), wait in quanta, remaining}: gcra() line for line.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now
if ARGV[3] then
    now = tonumber(ARGV[3])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1048576 + math.floor(tonumber(time[2]) * 1048576 / 1000000)
end
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
    local previous = tonumber(stored)
    if previous == nil then
        return redis.error_reply('ERR rate-limit key ' .. KEYS[1] .. ' holds no TAT')
    end
    if previous > now then
        tat = previous
    end
end
local wait = tat - now - tolerance
if wait > 0 then
    return {0, wait, 0}
end
tat = tat + interval
local room = now + tolerance - tat
local remaining = 0
if room >= 0 then
    remaining = math.floor(room / interval) + 1
end
if ARGV[3] then
    redis.call('SET', KEYS[1], string.format('%d', tat))
else
    local ttl = math.floor((tat - now) / 1048.576) + 2
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', ttl)
end
return {1, 0, remaining}
"""
_GCRA = Script(_GCRA_LUA)


@attrs.frozen(kw_only=True)
class RedisStoreStatistics:
    """A snapshot of a :class:`RedisStore`, from :meth:`RedisStore.statistics`.

    Counters are cumulative over the store's life; ``hits == redis_hits + fallback_hits +
    refused_unavailable``.

    Attributes:
        hits: Hits answered.
        redis_hits: Hits decided by Redis (shared counting).
        fallback_hits: Hits decided by the local :class:`MemoryStore` because Redis could not
            answer (``on_unavailable="allow_local"``).
        refused_unavailable: Hits refused because Redis could not answer
            (``on_unavailable="refuse"``).
        errors: Calls to Redis that failed: unavailable, connection lost, timed out, or an
            error reply. Hits answered by the policy without a call (while another hit probes
            a Redis that is down) are not counted here.
        timeouts: Those of the errors that were calls without a reply within the timeout.
        reply_errors: Those of the errors that were error replies (logged at ERROR).
        outages: Outages begun (each logged once when it begins and once when it ends).
        available: Whether Redis answered the last call (no outage is on).
    """

    hits: int
    redis_hits: int
    fallback_hits: int
    refused_unavailable: int
    errors: int
    timeouts: int
    reply_errors: int
    outages: int
    available: bool


class RedisStore:
    """A :class:`RateLimitStore` in Redis, shared by every backend replica that uses the same
    Redis and prefix::

        async with open_live_redis("redis://redis:6379") as live:
            limit = RateLimit(messages=Rate(burst=10, per_second=2), store=RedisStore(live))

    Args:
        redis: The connection, kept up by :func:`~strands_trio.redis.serve_live_redis` (or
            :func:`~strands_trio.redis.open_live_redis`) in the caller's nursery.
        prefix: Put before every key in Redis. Replicas that share limits use the same one;
            apps that share a Redis but not limits use different ones.
        on_unavailable: What a hit gets when Redis cannot answer: ``"allow_local"`` (decided
            by a :class:`MemoryStore` in this process: the limit holds per replica until
            Redis is back) or ``"refuse"`` (refused, ``retry_after`` one interval or 1 s,
            whichever is shorter).
        fallback: The local store for ``"allow_local"``: a fresh :class:`MemoryStore` by
            default.
        timeout: Seconds a hit waits for Redis before the policy answers it: 0.1 by default,
            a thousand loopback round trips and about a hundred on a LAN, so a busy Redis
            does not trip it, while a Redis that hangs (without the connection breaking)
            delays a message by at most that much.

    Raises:
        TypeError: *redis* is not a ``LiveRedis``, *prefix* not a ``str``, *fallback* not a
            ``MemoryStore``.
        ValueError: *on_unavailable* is neither policy, *fallback* is given with
            ``"refuse"``, or *timeout* is not a positive, finite number.
    """

    #: No synchronous fast path (:attr:`RateLimitStore.delay_nowait`): every hit asks Redis.
    delay_nowait: None = None

    def __init__(
        self,
        redis: LiveRedis,
        *,
        prefix: str = "strands:rl:",
        on_unavailable: Literal["allow_local", "refuse"] = "allow_local",
        fallback: MemoryStore | None = None,
        timeout: float = 0.1,
    ) -> None:
        if not isinstance(redis, LiveRedis):
            raise TypeError(
                "redis must be a LiveRedis, from serve_live_redis() or open_live_redis() "
                f"(it reconnects; a plain Redis connection does not), got {redis!r}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str such as 'strands:rl:', got {prefix!r}")
        if on_unavailable not in _POLICIES:
            raise ValueError(
                f"on_unavailable must be 'allow_local' or 'refuse', got {on_unavailable!r}"
            )
        if fallback is not None and not isinstance(fallback, MemoryStore):
            raise TypeError(f"fallback must be a MemoryStore or None, got {fallback!r}")
        if fallback is not None and on_unavailable == "refuse":
            raise ValueError(
                "fallback is the store of on_unavailable='allow_local'; with 'refuse' leave it out"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self._redis = redis
        self._prefix = prefix
        self._on_unavailable = on_unavailable
        self._fallback = (fallback or MemoryStore()) if on_unavailable == "allow_local" else None
        self._timeout = float(timeout)
        self._hits = self._redis_hits = self._fallback_hits = self._refused = 0
        self._errors = self._timeouts = self._reply_errors = 0
        #: Counts the hits the policy answered during an outage.
        self._outage = OutageLog(
            logger,
            f"rate limits: Redis at {redis.config.where}",
            meanwhile=f"{self._policy()} until it is back",
            counted=f"hits answered by on_unavailable={on_unavailable!r}",
        )
        self._probing = False  # a hit is asking Redis whether the outage is over
        self._next_error_log = -math.inf
        self._errors_unlogged = 0

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self._redis.config.where} prefix={self._prefix!r} "
            f"on_unavailable={self._on_unavailable!r}>"
        )

    @property
    def prefix(self) -> str:
        """What is put before every key in Redis."""
        return self._prefix

    @property
    def on_unavailable(self) -> Literal["allow_local", "refuse"]:
        """The policy for hits Redis cannot answer."""
        return self._on_unavailable

    @property
    def fallback(self) -> MemoryStore | None:
        """The local store of ``"allow_local"`` (``None`` with ``"refuse"``)."""
        return self._fallback

    @property
    def timeout(self) -> float:
        """Seconds a hit waits for Redis."""
        return self._timeout

    async def hit(self, key: str, rate: Rate, now: float | None = None) -> Decision:
        """Count one hit on *key* now, by Redis's clock, and say whether it is within *rate*.

        Never raises for Redis's sake: when Redis cannot answer, the policy does (see the
        class). *now* is for tests: a time in seconds (``>= 0``, below 2**33) to decide at
        instead of Redis's clock, exactly as :meth:`MemoryStore.hit` takes it; every hit on
        the keys must then pass one, from the same clock, and the keys get no expiry (Redis
        would expire them by its own clock).

        Cancellation: when cancelled before the script was sent, the hit is not counted; after,
        Redis may have counted it (the reply is read and dropped).
        """
        if self._probing:  # an outage is on and another hit is finding out whether it is over
            await trio.lowlevel.checkpoint()
            return self._answer_locally(key, rate, now)
        interval = int(rate._interval * _PER_SECOND)
        args: tuple[int, ...] = (interval, (rate.burst - 1) * interval)
        if now is not None:
            args += (math.floor(now * _PER_SECOND),)
        probing = self._probing = self._outage.on
        try:
            with trio.move_on_after(self._timeout):
                reply = await _GCRA(self._redis, keys=(self._prefix + key,), args=args)
                decision = _decode(reply)
                self._outage.ended()
                self._hits += 1
                self._redis_hits += 1
                return decision
            self._timeouts += 1
            self._unavailable(f"no reply within {self._timeout:g} s")
        except RedisUnavailable as exc:  # raised at once, without a checkpoint
            self._unavailable(str(exc))
            await trio.lowlevel.checkpoint()
        except RedisConnectionError as exc:
            self._unavailable(f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc))
        except RedisReplyError as exc:
            self._outage.ended()
            self._reply_error(key, exc)
        finally:
            if probing:
                self._probing = False
        return self._answer_locally(key, rate, now)

    def statistics(self) -> RedisStoreStatistics:
        """What the store has counted (see :class:`RedisStoreStatistics`)."""
        return RedisStoreStatistics(
            hits=self._hits,
            redis_hits=self._redis_hits,
            fallback_hits=self._fallback_hits,
            refused_unavailable=self._refused,
            errors=self._errors,
            timeouts=self._timeouts,
            reply_errors=self._reply_errors,
            outages=self._outage.statistics().outages,
            available=not self._outage.on,
        )

    def _answer_locally(self, key: str, rate: Rate, now: float | None) -> Decision:
        self._hits += 1
        self._outage.count()
        if self._fallback is not None:
            self._fallback_hits += 1
            return self._fallback.hit_nowait(key, rate, trio.current_time() if now is None else now)
        self._refused += 1
        return _decision(False, min(rate.interval, _REFUSED_RETRY_AFTER), 0)

    def _policy(self) -> str:
        if self._fallback is not None:
            return "answering from this process's memory (limits hold per replica)"
        return "refusing every hit"

    def _unavailable(self, reason: str) -> None:
        self._errors += 1
        self._outage.failed(reason)

    def _reply_error(self, key: str, exc: RedisReplyError) -> None:
        self._errors += 1
        self._reply_errors += 1
        now = trio.current_time()
        if now < self._next_error_log:
            self._errors_unlogged += 1
            return
        logger.error(
            "rate limits: Redis answered a hit on %r with an error: %s; %s "
            "(%d more error replies since the last report; the next in %g s at the earliest)",
            self._prefix + key,
            exc,
            "answered it from this process's memory" if self._fallback else "refused it",
            self._errors_unlogged,
            _ERROR_LOG_PERIOD,
        )
        self._next_error_log = now + _ERROR_LOG_PERIOD
        self._errors_unlogged = 0


def _decode(reply: Any) -> Decision:
    """The script's ``{allowed, wait, remaining}`` as a :class:`Decision`.

    Raises:
        RedisReplyError: the reply is not that (a script of another version under the key?).
    """
    try:
        allowed, wait, remaining = reply
        if allowed == 1:
            return _decision(True, 0.0, remaining)
        if allowed == 0 and wait > 0:
            return _decision(False, wait * QUANTUM, 0)
    except (TypeError, ValueError):
        pass
    raise RedisReplyError(f"ERR unexpected reply from the rate-limit script: {reply!r}")
