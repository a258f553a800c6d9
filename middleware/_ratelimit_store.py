"""The rate limiter's algorithm (GCRA) and its in-memory store, without the middleware plumbing.

Theory of operation: a :class:`Rate` is a sustained rate with a burst allowance, *burst* hits
at once and then one hit every *interval* = ``1 / per_second`` seconds. The generic cell rate
algorithm (GCRA, the leaky bucket as a meter) keeps one number per key, the *theoretical
arrival time* (TAT): the time at which the key's bucket would be empty again. A hit at ``now``
is allowed when ``TAT - now <= (burst - 1) * interval`` (the bucket has room), and then moves
the TAT one interval further (``max(TAT, now) + interval``); a refused hit changes nothing. A
TAT in the past means an empty bucket, which is exactly a key never seen: that is why the
state is one float per key, why idle keys can be forgotten, and why a Redis store can run the
same :func:`gcra` in one atomic script per hit.

Exactness: every time the algorithm handles is a multiple of ``QUANTUM`` (2**-20 s, about
one microsecond): ``now`` is rounded down to it and the interval is rounded down to it once, in
:class:`Rate`. Sums and differences of such multiples are exact in binary floating point for
times below 2**33 s (272 years, so wall-clock epoch seconds too), so the edge is exact for any
rate and any clock value: *burst* hits at the same instant are all allowed and the next one is
refused, and hits spaced by the interval are all allowed. Float arithmetic on the raw values
would instead drift by an ulp per hit (rate 3/s, or a clock at 10**7 s) and need an epsilon
that no choice makes right for every clock and rate. The price is that a rate is rounded up
by less than one quantum per interval: 1,000/s becomes 1,000.55/s, 10/s becomes 10.00006/s.

The memory store keeps ``key -> TAT`` in a plain dict. Memory is bounded without a timer or a
task, since the store never reads a clock and runs only when called:

- *Expiry.* Once per period of ``max(_SWEEP_PERIOD, number of keys)`` hits, the store rebuilds
  its dict without the keys whose TAT has passed. A sweep costs O(keys) and runs at most once
  per that many hits, so it is O(1) per hit, amortized, and an idle key lives at most one
  period. Between sweeps a hit is one dict lookup and one store: no ordering to maintain,
  which is what makes it about twice as fast as keeping keys in recency order.
  :meth:`MemoryStore.expire` sweeps at once.
- *The hard cap.* When a new key would pass ``max_keys``, the store sweeps, and if that is
  not enough it evicts the keys with the earliest TAT, down to 90% of the cap (so the next
  eviction is a tenth of the cap away). Those are the fullest buckets, the clients closest to
  a fresh burst anyway, so eviction costs the least state: an evicted key's client gets its
  fresh burst early, and a client hammering at its limit (the latest TAT) is evicted last.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

import attrs
import trio
from attrs.validators import ge, gt, instance_of, le

from ._validators import not_bool

__all__ = [
    "QUANTUM",
    "Decision",
    "MemoryStore",
    "MemoryStoreStatistics",
    "Rate",
    "RateLimitStore",
    "gcra",
]

#: The time grid of the algorithm, in seconds (2**-20 s, about 0.95 microseconds).
QUANTUM = 2.0**-20

_MAX_HORIZON = 2.0**32  # seconds: a bucket's span must stay well inside the exact range
_SWEEP_PERIOD = 1024  # hits between two sweeps, at least
_EVICT_TO = 0.9  # past the cap, evict down to this share of it
_CACHED_DECISIONS = 256  # allowed decisions kept ready, by remaining count


def _positive_count(name: str, value: Any) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class Rate:
    """A sustained rate with a burst allowance: *burst* hits at once, then *per_second* hits
    per second.

    ``Rate(per_second=2, burst=10)`` lets a client send 10 messages at once, then one every
    half second; the bucket refills at that pace while the client is quiet. In any window of
    ``W`` seconds at most ``burst + (W + QUANTUM) / interval`` hits are allowed: that is
    ``burst + W * per_second``, give or take the rounding to ``QUANTUM`` (2**-20 s).

    Attributes:
        burst: Hits allowed at the same instant (the bucket's size), an integer >= 1.
        per_second: The sustained rate, in hits per second, a positive number of at most
            2**20 (one hit per ``QUANTUM``).

    Raises:
        TypeError: *burst* is not an ``int``.
        ValueError: *burst* is a bool or below 1, *per_second* is not a number in
            ``(0, 2**20]``, or a full bucket would span more than 2**32 seconds.
    """

    burst: int = attrs.field(validator=[instance_of(int), not_bool("burst", "an int"), ge(1)])
    # At most one hit per QUANTUM; NaN fails both comparisons.
    per_second: float = attrs.field(validator=[gt(0.0), le(1 / QUANTUM)])
    _interval: float = attrs.field(init=False, repr=False, eq=False)
    _tolerance: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.burst / self.per_second > _MAX_HORIZON:
            raise ValueError(
                "burst / per_second must be at most 2**32 seconds, got "
                f"burst={self.burst!r} and per_second={self.per_second!r}"
            )
        # Rounded down to the grid: the rate is never stricter than asked.
        interval = math.floor(1 / self.per_second / QUANTUM) * QUANTUM
        object.__setattr__(self, "_interval", interval)
        object.__setattr__(self, "_tolerance", (self.burst - 1) * interval)

    @classmethod
    def per_minute(cls, count: int, *, burst: int | None = None) -> Rate:
        """*count* hits per minute; the burst defaults to *count*, one minute's worth.

        Raises:
            ValueError: *count* or *burst* is not an integer >= 1.
        """
        return cls._per_period(count, 60, burst)

    @classmethod
    def per_hour(cls, count: int, *, burst: int | None = None) -> Rate:
        """*count* hits per hour; the burst defaults to *count*, one hour's worth.

        Raises:
            ValueError: *count* or *burst* is not an integer >= 1.
        """
        return cls._per_period(count, 3600, burst)

    @classmethod
    def _per_period(cls, count: int, seconds: int, burst: int | None) -> Rate:
        _positive_count("count", count)
        return cls(burst=count if burst is None else burst, per_second=count / seconds)

    @property
    def interval(self) -> float:
        """Seconds between two hits at the sustained rate, on the ``QUANTUM`` grid."""
        return self._interval


@attrs.frozen(kw_only=True)
class Decision:
    """The answer to one hit.

    Attributes:
        allowed: Whether the hit is within the rate.
        retry_after: Seconds until one more hit would be allowed (0 when allowed): a hit at
            ``now + retry_after`` is allowed, and it is exact to a ``QUANTUM``.
        remaining: Hits still allowed at this instant, after this one.
    """

    allowed: bool
    retry_after: float
    remaining: int


_ALLOWED = tuple(
    Decision(allowed=True, retry_after=0.0, remaining=n) for n in range(_CACHED_DECISIONS)
)
_new_decision = object.__new__
_set_allowed = Decision.allowed.__set__  # type: ignore[attr-defined]
_set_retry_after = Decision.retry_after.__set__  # type: ignore[attr-defined]
_set_remaining = Decision.remaining.__set__  # type: ignore[attr-defined]


def _decision(allowed: bool, retry_after: float, remaining: int) -> Decision:
    # Fills the slots directly: attrs' frozen __init__ costs ~0.7 us, more than a whole hit.
    # Allowed decisions with a small remaining count are shared (they are immutable).
    if allowed and remaining < _CACHED_DECISIONS:
        return _ALLOWED[remaining]
    decision: Decision = _new_decision(Decision)
    _set_allowed(decision, allowed)
    _set_retry_after(decision, retry_after)
    _set_remaining(decision, remaining)
    return decision


def gcra(tat: float | None, now: float, rate: Rate) -> tuple[float, Decision]:
    """Decide one hit at *now* for a key whose theoretical arrival time is *tat*.

    This is the whole algorithm, pure: a store keeps the returned TAT for the key (or
    ``None`` for a key never seen; a TAT in the past means the same) and returns the decision.
    A Redis store mirrors it line for line in a Lua script: Lua numbers are doubles, so the
    arithmetic on the ``QUANTUM`` grid is exact there too.

    Args:
        tat: The key's TAT from the previous hit, or ``None`` for a new key.
        now: The current time, in seconds on a clock shared by every hit on the key, >= 0
            and below 2**33. It is rounded down to ``QUANTUM``.
        rate: The key's rate.

    Returns:
        The key's new TAT (unchanged when refused) and the decision.
    """
    now -= now % QUANTUM
    if tat is None or tat < now:
        tat = now
    wait = tat - now - rate._tolerance
    if wait > 0:
        return tat, _decision(False, wait, 0)
    tat += rate._interval
    # The bucket's room left after this hit; every interval of it is one more hit now.
    room = now + rate._tolerance - tat
    return tat, _decision(True, 0.0, int(room / rate._interval) + 1 if room >= 0 else 0)


#: A store's synchronous hit: ``(key, rate, now) -> 0.0`` when the hit is allowed, else its
#: ``retry_after`` in seconds (see :attr:`RateLimitStore.delay_nowait`).
DelayNowait: TypeAlias = Callable[[str, Rate, float], float]


@runtime_checkable
class RateLimitStore(Protocol):
    """Where the rate limiter keeps each key's TAT.

    The same store serves several limits at once (connections, messages), each with its own
    :class:`Rate` and its own key prefix chosen by the caller; a key is always hit with the
    same rate. The store reads its own clock: a shared store (Redis) must use one that every
    process sharing it agrees on (the server's time), and runs :func:`gcra` atomically per hit.

    A store has three members: :meth:`hit`, :meth:`statistics`, and :attr:`delay_nowait`, the
    fast path of a store that decides without waiting for anything, or ``None``::

        class MyStore:
            delay_nowait = None  # every hit is awaited

            async def hit(self, key: str, rate: Rate) -> Decision: ...

            def statistics(self) -> MyStoreStatistics: ...
    """

    @property
    def delay_nowait(self) -> DelayNowait | None:
        """The synchronous form of :meth:`hit`, or ``None`` for a store that cannot decide
        without I/O (:class:`~strands_trio.middleware.RedisStore`).

        When it is a function, :class:`~strands_trio.middleware.RateLimit` calls it instead of
        awaiting :meth:`hit`, saving a coroutine per message: ``delay_nowait(key, rate, now)``
        counts one hit on *key* at *now* (:func:`trio.current_time`) and returns ``0.0`` if it
        is allowed, else its ``retry_after``. It must neither block nor raise.
        :meth:`MemoryStore.delay_nowait` is one.
        """
        ...

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one hit on *key* now and say whether it is within *rate*."""
        ...

    def statistics(self) -> object:
        """A frozen record of what the store holds and has decided, which
        :meth:`RateLimit.statistics() <strands_trio.middleware.RateLimit.statistics>` includes
        as its ``store``."""
        ...


@attrs.frozen(kw_only=True)
class MemoryStoreStatistics:
    """A snapshot of a :class:`MemoryStore`, from :meth:`MemoryStore.statistics`.

    Counters are cumulative over the store's life.
    """

    #: Keys held now.
    keys: int
    #: Hits, and how they were decided (``hits == allowed + refused``).
    hits: int
    allowed: int
    refused: int
    #: Keys dropped because their TAT had passed (no state lost).
    expired: int
    #: Keys dropped by the ``max_keys`` cap while still in use (their clients got a fresh
    #: burst early).
    evicted: int


class MemoryStore:
    """A :class:`RateLimitStore` in this process's memory, for one backend.

    Memory is bounded: idle keys are dropped as hits go by, and never more than *max_keys*
    are held (see the module's theory of operation for the trade-off at the cap). It decides
    without I/O, so it offers the synchronous fast path, :meth:`delay_nowait`.

    Args:
        max_keys: The most keys held at once; past it, the fullest buckets are evicted.

    Raises:
        ValueError: *max_keys* is not an integer >= 1.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        _positive_count("max_keys", max_keys)
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}
        self._hits = self._refused = self._expired = self._evicted = 0
        self._next_sweep = _SWEEP_PERIOD

    def hit_nowait(self, key: str, rate: Rate, now: float) -> Decision:
        """Count one hit on *key* at *now* (seconds) and say whether it is within *rate*.

        The synchronous form of :meth:`hit`, for a caller on a hot path: no checkpoint, no
        coroutine.
        """
        tats = self._tats
        old = tats.get(key)
        tat, decision = gcra(old, now, rate)
        self._hits += 1
        if decision.allowed:
            tats[key] = tat
            if old is None and len(tats) > self._max_keys:
                self._evict(now)
        else:
            self._refused += 1
        if self._hits >= self._next_sweep:
            self._sweep(now)
        return decision

    def delay_nowait(self, key: str, rate: Rate, now: float) -> float:
        """Count one hit as :meth:`hit_nowait` does, and return ``0.0`` if it is allowed, else
        its ``retry_after``.

        The store's :attr:`RateLimitStore.delay_nowait`, the rate-limit middleware's hot path:
        the same decision as :func:`gcra`, inlined, without making a :class:`Decision`.
        """
        now -= now % QUANTUM
        tats = self._tats
        old = tats.get(key)
        tat = now if old is None or old < now else old
        wait = tat - now - rate._tolerance
        self._hits += 1
        if wait > 0:  # refused: only a key seen before can be over its rate
            self._refused += 1
        else:
            tats[key] = tat + rate._interval
            if old is None and len(tats) > self._max_keys:
                self._evict(now)
            wait = 0.0
        if self._hits >= self._next_sweep:
            self._sweep(now)
        return wait

    async def hit(self, key: str, rate: Rate, now: float | None = None) -> Decision:
        """Count one hit on *key* at *now* (seconds; by default ``trio.current_time()``, a
        clock of this process only) and say whether it is within *rate*.

        Cancellation: a checkpoint, as every Trio async function is, taken before the hit;
        when cancelled the hit is not counted.
        """
        await trio.lowlevel.checkpoint()
        return self.hit_nowait(key, rate, trio.current_time() if now is None else now)

    def expire(self, now: float) -> int:
        """Drop every key idle at *now* (its TAT has passed) and return how many were dropped.

        Hits already do this once per sweep period; this gives the memory back at once (when
        traffic stops, say).
        """
        before = self._expired
        self._sweep(now)
        return self._expired - before

    def statistics(self) -> MemoryStoreStatistics:
        """What the store holds and has decided (see :class:`MemoryStoreStatistics`)."""
        return MemoryStoreStatistics(
            keys=len(self._tats),
            hits=self._hits,
            allowed=self._hits - self._refused,
            refused=self._refused,
            expired=self._expired,
            evicted=self._evicted,
        )

    def _sweep(self, now: float) -> None:
        tats = self._tats
        # Rebuilt rather than deleted from: a dict keeps the holes of deleted keys.
        kept = {key: tat for key, tat in tats.items() if tat > now}
        self._expired += len(tats) - len(kept)
        self._tats = kept
        self._next_sweep = self._hits + max(_SWEEP_PERIOD, len(kept))

    def _evict(self, now: float) -> None:
        self._sweep(now)
        tats = self._tats
        if len(tats) <= self._max_keys:
            return
        excess = len(tats) - int(self._max_keys * _EVICT_TO)
        for key, _ in heapq.nsmallest(excess, tats.items(), key=_tat_of):
            del tats[key]
        self._evicted += excess
        self._tats = dict(tats)  # without the holes


def _tat_of(item: tuple[str, float]) -> float:
    return item[1]
