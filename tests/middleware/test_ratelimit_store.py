"""The rate limiter's GCRA and memory store: exact at the burst edge for any rate and clock,
sustained at the rate, exact retry_after and remaining, keys independent, idle keys dropped
without a task, the max_keys cap, and hypothesis properties over arbitrary hit times."""

from __future__ import annotations

import math
from fractions import Fraction

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from strands_trio.middleware._ratelimit_store import (
    _SWEEP_PERIOD,
    QUANTUM,
    Decision,
    MemoryStore,
    MemoryStoreStatistics,
    Rate,
    RateLimitStore,
    gcra,
)

#: Clock values as callers have them: zero, trio's offset clock, a server up for a year and
#: wall-clock epoch seconds (what a shared store would use).
CLOCKS = [0.0, 12_345.678_9, 31_536_000.123, 1_700_000_000.5]

#: Rates where raw float arithmetic drifts off the edge (see the module's docstring).
AWKWARD = [
    Rate(per_second=3, burst=10),
    Rate(per_second=0.1, burst=5),
    Rate(per_second=7, burst=1),
    Rate(per_second=1000, burst=100),
    Rate(per_second=1 / 3, burst=3),
    Rate(per_second=9_999.5, burst=5_000),
]

rates = st.builds(
    Rate,
    per_second=st.one_of(
        st.sampled_from([0.1, 1 / 3, 3.0, 7.0, 1000.0]),
        st.floats(min_value=1e-3, max_value=1e4, allow_nan=False),
    ),
    burst=st.integers(min_value=1, max_value=300),
)
clocks = st.one_of(st.sampled_from(CLOCKS), st.floats(min_value=0, max_value=2.0**31))


def hits(store: MemoryStore, key: str, rate: Rate, now: float, count: int) -> list[bool]:
    return [store.hit_nowait(key, rate, now).allowed for _ in range(count)]


# The burst edge and the sustained rate.


@pytest.mark.parametrize("now", CLOCKS)
@pytest.mark.parametrize("rate", AWKWARD, ids=repr)
def test_exactly_burst_hits_at_one_instant(rate: Rate, now: float) -> None:
    """Exactly *burst* hits at the same instant are allowed and the next one is refused."""
    store = MemoryStore()
    assert hits(store, "k", rate, now, rate.burst + 1) == [True] * rate.burst + [False]


@given(rates, clocks)
def test_exactly_burst_hits_at_one_instant_for_any_rate(rate: Rate, now: float) -> None:
    """The burst edge is exact for any rate, burst and clock value."""
    store = MemoryStore()
    assert hits(store, "k", rate, now, rate.burst + 1) == [True] * rate.burst + [False]


@pytest.mark.parametrize("now", CLOCKS)
@pytest.mark.parametrize("rate", AWKWARD, ids=repr)
def test_sustained_rate_after_the_burst(rate: Rate, now: float) -> None:
    """After a burst, hits spaced 1/per_second apart are all allowed, and one more in
    between is refused until the rounding of the rate adds up to half an interval."""
    store = MemoryStore()
    assert all(hits(store, "k", rate, now, rate.burst))
    gap = 1 / rate.per_second
    gained = gap - rate.interval  # per hit, from rounding the interval down to the grid
    for _ in range(min(200, int(rate.interval / 2 / gained) if gained else 200)):
        now += gap
        assert store.hit_nowait("k", rate, now).allowed
        assert not store.hit_nowait("k", rate, now).allowed


@given(
    rates,
    clocks,
    st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_hits_spaced_by_the_interval_are_all_allowed(
    rate: Rate, start: float, extra: list[float]
) -> None:
    """Hits at least 1/per_second apart (in the caller's floats) are never refused, even
    with a burst of one."""
    rate = attrs.evolve(rate, burst=1)
    store = MemoryStore()
    now = start
    for more in extra:
        assert store.hit_nowait("k", rate, now).allowed
        now += 1 / rate.per_second + more / rate.per_second


def test_rate_is_rounded_up_by_less_than_a_quantum_per_interval() -> None:
    """The interval is 1/per_second rounded down to the grid, by less than a quantum."""
    for rate in AWKWARD:
        assert rate.interval <= 1 / rate.per_second < rate.interval + QUANTUM
        assert rate.interval % QUANTUM == 0
    assert Rate(per_second=2, burst=1).interval == 0.5


# retry_after and remaining.


def test_retry_after_is_exact() -> None:
    """A refusal says how long until the bucket has room for one more hit."""
    store = MemoryStore()
    rate = Rate(per_second=2, burst=3)
    assert hits(store, "k", rate, 10.0, 3) == [True] * 3
    assert store.hit_nowait("k", rate, 10.0) == Decision(
        allowed=False, retry_after=0.5, remaining=0
    )
    assert store.hit_nowait("k", rate, 10.25).retry_after == 0.25
    slow = Rate(per_second=0.1, burst=1)
    assert store.hit_nowait("slow", slow, 100.0).allowed
    assert store.hit_nowait("slow", slow, 100.0).retry_after == 10.0
    assert store.hit_nowait("slow", slow, 104.0).retry_after == 6.0


def test_retry_after_is_rounded_up_to_the_grid_from_an_unaligned_clock() -> None:
    """From a clock between grid points, retry_after is at most one quantum longer than
    exact, and waiting it is always enough."""
    store = MemoryStore()
    rate = Rate(per_second=2, burst=1)
    assert store.hit_nowait("k", rate, 10.0).allowed
    now = 10.2
    decision = store.hit_nowait("k", rate, now)
    assert not decision.allowed
    assert 0.3 <= decision.retry_after <= 0.3 + QUANTUM
    assert not store.hit_nowait("k", rate, now + decision.retry_after - QUANTUM).allowed
    assert store.hit_nowait("k", rate, now + decision.retry_after).allowed


def test_remaining_counts_down_and_refills() -> None:
    """remaining is the hits left in the burst now; the bucket refills one per interval."""
    store = MemoryStore()
    rate = Rate(per_second=4, burst=5)
    assert [store.hit_nowait("k", rate, 0.0).remaining for _ in range(5)] == [4, 3, 2, 1, 0]
    assert store.hit_nowait("k", rate, 0.0) == Decision(
        allowed=False, retry_after=0.25, remaining=0
    )
    assert store.hit_nowait("k", rate, 0.5).remaining == 1
    assert store.hit_nowait("k", rate, 10.0).remaining == 4


def test_remaining_above_the_decision_cache() -> None:
    """Large bursts report remaining exactly past the shared decisions."""
    store = MemoryStore()
    rate = Rate(per_second=1, burst=1000)
    assert [store.hit_nowait("k", rate, 5.0).remaining for _ in range(1000)] == list(
        range(999, -1, -1)
    )


@settings(max_examples=200)
@given(
    rates,
    clocks,
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=40),
)
def test_remaining_and_retry_after_predict_the_next_hits(
    rate: Rate, start: float, gaps: list[float]
) -> None:
    """After any history, *remaining* more hits are allowed at the same instant and no more,
    and a refused hit would be allowed after *retry_after*."""
    now = start
    tat = None
    for gap in gaps:
        now += gap * rate.interval
        tat, decision = gcra(tat, now, rate)
        if decision.allowed:
            assert decision.retry_after == 0
            for _ in range(decision.remaining):
                assert gcra(tat, now, rate)[1].allowed
                tat = gcra(tat, now, rate)[0]
            assert not gcra(tat, now, rate)[1].allowed
        else:
            assert decision.remaining == 0
            assert decision.retry_after > 0
            assert gcra(tat, now + decision.retry_after, rate)[1].allowed


# The window bound.


@settings(max_examples=300)
@given(
    rates,
    clocks,
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0, max_value=2.5)), min_size=1, max_size=120
    ),
)
def test_any_window_allows_at_most_burst_plus_window_times_rate(
    rate: Rate, start: float, gaps: list[float]
) -> None:
    """Over any hit times, the hits allowed in any window [t, t + W] number at most
    burst + (W + QUANTUM) / interval, computed exactly: the only slack is the documented
    rounding of times and of the rate to the grid."""
    store = MemoryStore()
    now = start
    allowed: list[Fraction] = []
    for gap in gaps:
        now += gap * rate.interval
        if store.hit_nowait("k", rate, now).allowed:
            allowed.append(Fraction(now))
    interval = Fraction(rate.interval)
    for i, first in enumerate(allowed):
        for j in range(i, len(allowed)):
            window = allowed[j] - first
            assert j - i + 1 <= rate.burst + (window + Fraction(QUANTUM)) / interval


# Keys and the store.


def test_keys_are_independent() -> None:
    """Exhausting one key leaves the others untouched, whatever their rates."""
    store = MemoryStore()
    messages = Rate(per_second=1, burst=2)
    connections = Rate.per_minute(10)
    assert hits(store, "msg:alice", messages, 0.0, 3) == [True, True, False]
    assert hits(store, "msg:bob", messages, 0.0, 2) == [True, True]
    assert hits(store, "conn:alice", connections, 0.0, 11) == [True] * 10 + [False]
    assert store.statistics() == MemoryStoreStatistics(
        keys=3, hits=16, allowed=14, refused=2, expired=0, evicted=0
    )


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.floats(min_value=0, max_value=0.5)),
        min_size=1,
        max_size=300,
    )
)
def test_store_decides_as_gcra_on_a_plain_dict(steps: list[tuple[int, float]]) -> None:
    """Dropping idle keys never changes a decision: the store, swept after every hit, answers
    exactly as GCRA over a dict that keeps every key forever."""
    rate = Rate(per_second=20, burst=3)
    store = MemoryStore()
    tats: dict[str, float] = {}
    now = 1000.0
    for key_no, gap in steps:
        now += gap
        key = f"k{key_no}"
        tats[key], expected = gcra(tats.get(key), now, rate)
        assert store.hit_nowait(key, rate, now) == expected
        store.expire(now)  # a sweep after every hit: dropping idle keys must change nothing
    assert store.statistics().keys <= len(tats)


def test_idle_keys_expire_as_hits_go_by_without_a_task() -> None:
    """Once per sweep period of hits, idle keys are dropped, down to the keys in use; no
    timer or task is involved, and expire() drops the rest at once."""
    store = MemoryStore()
    rate = Rate(per_second=10, burst=5)
    for n in range(1000):
        store.hit_nowait(f"k{n}", rate, 0.0)
    later = 60.0
    for _ in range(_SWEEP_PERIOD - 1000 - 1):
        store.hit_nowait("hot", rate, later)
    assert store.statistics().keys == 1001  # no sweep yet
    store.hit_nowait("hot", rate, later)  # the period's last hit sweeps
    stats = store.statistics()
    assert (stats.keys, stats.expired, stats.evicted) == (1, 1000, 0)
    assert store.expire(later) == 0
    assert store.expire(later + 1) == 1
    assert store.statistics().keys == 0


def test_sweep_keeps_keys_in_use_whatever_their_age() -> None:
    """A sweep drops exactly the keys whose bucket has emptied, whichever were hit first."""
    store = MemoryStore()
    store.hit_nowait("slow", Rate.per_minute(1), 0.0)
    fast = Rate(per_second=100, burst=1)
    for n in range(100):
        store.hit_nowait(f"k{n}", fast, 0.0)
    store.hit_nowait("k0", fast, 30.0)
    assert store.expire(30.0) == 99
    assert store.statistics().keys == 2
    assert not store.hit_nowait("slow", Rate.per_minute(1), 30.0).allowed


def test_delay_nowait_decides_as_hit_nowait() -> None:
    """The middleware's fast path gives the same decisions and counts as hit_nowait."""
    rate = Rate(per_second=3, burst=2)
    fast, slow = MemoryStore(), MemoryStore()
    for step in range(200):
        now = step * 0.13
        key = f"k{step % 3}"
        decision = slow.hit_nowait(key, rate, now)
        delay = fast.delay_nowait(key, rate, now)
        assert delay == decision.retry_after
        assert (delay == 0.0) == decision.allowed
    assert fast.statistics() == slow.statistics()


def test_max_keys_evicts_the_fullest_buckets() -> None:
    """Past max_keys, idle keys go first, then the keys with the earliest TAT (the buckets
    closest to full), down to 90% of the cap; a client hammering at its limit stays, and an
    evicted client comes back with a fresh burst (the documented trade-off)."""
    store = MemoryStore(max_keys=10)
    rate = Rate(per_second=1, burst=3)
    for n in range(10):  # key kN has been hit N % 3 + 1 times: its TAT grows with that
        for _ in range(n % 3 + 1):
            store.hit_nowait(f"k{n}", rate, 0.0)
    assert store.hit_nowait("new", rate, 0.0).allowed
    stats = store.statistics()
    assert (stats.keys, stats.evicted, stats.expired) == (9, 2, 0)
    assert not store.hit_nowait("k2", rate, 0.0).allowed  # hammering: still limited
    assert store.hit_nowait("k0", rate, 0.0).allowed  # evicted: fresh


def test_max_keys_counts_an_idle_key_pushed_out_as_expired() -> None:
    """A key pushed out by the cap after its bucket emptied lost nothing: it counts as
    expired, not evicted."""
    store = MemoryStore(max_keys=1)
    rate = Rate(per_second=1, burst=1)
    store.hit_nowait("a", rate, 0.0)
    store.hit_nowait("b", rate, 5.0)
    stats = store.statistics()
    assert (stats.keys, stats.expired, stats.evicted) == (1, 1, 0)


# The async interface.


async def test_async_hit_decides_like_hit_nowait() -> None:
    """The protocol's async hit gives the same decisions and counts as hit_nowait."""
    with trio.fail_after(5):
        store: RateLimitStore = MemoryStore()
        rate = Rate(per_second=1, burst=2)
        decisions = [await store.hit("k", rate, 3.0) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[2].retry_after == 1.0


async def test_async_hit_is_a_checkpoint_and_cancelled_hits_do_not_count() -> None:
    """A cancelled hit raises Cancelled at its checkpoint and is not counted."""
    with trio.fail_after(5):
        store = MemoryStore()
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.hit("k", Rate(per_second=1, burst=1), 0.0)
        assert scope.cancelled_caught
        assert store.statistics().hits == 0


# Construction.


@pytest.mark.parametrize(
    ("per_second", "burst", "error", "message"),
    [
        (1, 0, ValueError, "'burst' must be >= 1: 0"),
        (1, -3, ValueError, "'burst' must be >= 1: -3"),
        (1, 2.0, TypeError, "'burst' must be <class 'int'> (got 2.0 that is a <class 'float'>)."),
        (1, True, ValueError, "'burst' must be an int, not a bool"),
        (0, 1, ValueError, "'per_second' must be > 0.0: 0"),
        (-1.0, 1, ValueError, "'per_second' must be > 0.0: -1.0"),
        (math.nan, 1, ValueError, "'per_second' must be > 0.0: nan"),
        (math.inf, 1, ValueError, "'per_second' must be <= 1048576.0: inf"),
        (2.0**21, 1, ValueError, "'per_second' must be <= 1048576.0: 2097152.0"),
        (5e-324, 1, ValueError, "burst / per_second must be at most 2**32 seconds"),
        (1e-3, 10**10, ValueError, "burst / per_second must be at most 2**32 seconds"),
    ],
)
def test_rate_rejects_bad_values(
    per_second: float, burst: int, error: type[Exception], message: str
) -> None:
    """A Rate with a bad burst or rate raises an error whose message starts by naming the
    field."""
    with pytest.raises(error) as caught:
        Rate(per_second=per_second, burst=burst)
    assert caught.value.args[0].startswith(message)


def test_rate_constructors() -> None:
    """per_minute and per_hour spell a count per period, with a period's worth of burst."""
    assert Rate.per_minute(60) == Rate(per_second=1.0, burst=60)
    assert Rate.per_minute(30, burst=5) == Rate(per_second=0.5, burst=5)
    assert Rate.per_hour(7200, burst=1) == Rate(per_second=2.0, burst=1)
    assert repr(Rate.per_minute(60)) == "Rate(burst=60, per_second=1.0)"
    with pytest.raises(ValueError, match="count"):
        Rate.per_minute(0)
    with pytest.raises(ValueError, match="burst"):
        Rate.per_hour(10, burst=0)


@pytest.mark.parametrize("max_keys", [0, -1, 1.5])
def test_memory_store_rejects_bad_max_keys(max_keys: float) -> None:
    """MemoryStore refuses a max_keys that is not a positive integer."""
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=max_keys)  # type: ignore[arg-type]
