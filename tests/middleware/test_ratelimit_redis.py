"""RedisStore against a real redis-server: the in-memory GCRA's decisions exactly, at the same
instants; Redis's clock; one bucket shared by two backend replicas; keys that expire when their
bucket is empty; and the policy when Redis is down at start, killed, hung or answering errors:
answered locally or refused, counted, logged once per outage, shared again after a restart."""

from __future__ import annotations

import itertools
import json
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strands_trio.middleware import (
    Decision,
    MemoryStore,
    Rate,
    RateLimit,
    RedisStore,
    RedisStoreStatistics,
)
from strands_trio.middleware._ratelimit_redis import _GCRA
from strands_trio.middleware._ratelimit_store import QUANTUM
from strands_trio.redis import Backoff, LiveRedis, open_live_redis
from strands_trio.testing import MiddlewareHarness

from .test_ratelimit_store import AWKWARD, CLOCKS, clocks, rates

if TYPE_CHECKING:
    from .._redis import RedisServer

#: Real redis-servers: redis_url (the session's, emptied), redis_session_server, redis_server.
pytest_plugins = ["tests._redis"]

DEADLINE = 10
#: Quick attempts to connect again: a restarted server is found within tens of milliseconds.
QUICK = Backoff(first=0.01, maximum=0.05)
LOGGER = "strands_trio.middleware.ratelimit"
#: A rate that real time does not refill during a test: one hit per 1,000 s.
SLOW = Rate(burst=2, per_second=0.001)
PREFIXES = itertools.count()
#: The store tests' rates, and as many with a burst small enough to be spent in a few hits.
any_rates = st.one_of(rates, rates.map(lambda rate: attrs.evolve(rate, burst=rate.burst % 4 + 1)))


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[LiveRedis]:
    """A LiveRedis, once it is connected."""
    async with open_live_redis(url, backoff=QUICK) as live:
        await live.wait_available()
        yield live


def stats(store: RedisStore, **expected: object) -> None:
    """The store's statistics have the *expected* values (the others are not checked)."""
    actual = attrs.asdict(store.statistics())
    assert {name: actual[name] for name in expected} == expected


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# -- decisions ------------------------------------------------------------------------------


async def test_burst_then_refusal_with_retry_after(redis_url: str) -> None:
    """A burst passes with remaining counting down, the next hit is refused with the exact
    time to wait, and one interval later a hit passes: at given instants, and by Redis's own
    clock (where retry_after is what is left of the interval after the calls took)."""
    rate = Rate(burst=3, per_second=2)
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live)
            now = 1_700_000_000.25
            assert [(await store.hit("k", rate, now)).remaining for _ in range(3)] == [2, 1, 0]
            assert await store.hit("k", rate, now) == Decision(
                allowed=False, retry_after=0.5, remaining=0
            )
            assert (await store.hit("k", rate, now + 0.25)).retry_after == 0.25
            assert await store.hit("k", rate, now + 0.5) == Decision(
                allowed=True, retry_after=0.0, remaining=0
            )

            start = trio.current_time()
            assert all([(await store.hit("real", rate)).allowed for _ in range(3)])
            refused = await store.hit("real", rate)
            took = trio.current_time() - start
            assert not refused.allowed
            assert 0.5 - took - QUANTUM <= refused.retry_after <= 0.5
            stats(store, hits=10, redis_hits=10, errors=0, outages=0, available=True)


@pytest.mark.parametrize("now", CLOCKS)
@pytest.mark.parametrize("rate", AWKWARD, ids=repr)
async def test_exactly_burst_hits_at_one_instant(redis_url: str, rate: Rate, now: float) -> None:
    """Exactly burst hits at one instant are allowed and the next is refused, for the rates
    where float arithmetic drifts, at every clock value, as in the memory store."""
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live)
            allowed = [(await store.hit("k", rate, now)).allowed for _ in range(rate.burst + 1)]
    assert allowed == [True] * rate.burst + [False]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rate_a=any_rates,
    rate_b=any_rates,
    start=clocks,
    steps=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(
                st.sampled_from([0.0, 0.5, 1.0, 2.0]),  # at the same instant, on the edge
                st.floats(min_value=0, max_value=3),
            ),
        ),
        max_size=60,
    ),
)
async def test_same_decisions_as_the_memory_store(
    redis_url: str, rate_a: Rate, rate_b: Rate, start: float, steps: list[tuple[bool, float]]
) -> None:
    """Driven with the same instants, the script gives the Decision the memory store gives,
    field for field, for any rates, clock values and gaps (hits at one instant, whole
    intervals apart, which is the refill edge, any fraction apart, after the bucket
    emptied)."""
    memory = MemoryStore()
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live, prefix=f"eq{next(PREFIXES)}:")
            now = start
            for on_a, gap in steps:
                key, rate = ("a", rate_a) if on_a else ("b", rate_b)
                now += gap * rate.interval
                assert await store.hit(key, rate, now) == memory.hit_nowait(key, rate, now)


async def test_exact_at_the_end_of_the_range(redis_url: str) -> None:
    """The longest bucket a Rate allows (2**32 s) from a clock at 2**31 s and 3 quanta puts
    the TAT at an odd number of quanta above 2**52, where doubles are one apart: still exact,
    still the memory store's decisions, down to a retry_after of one quantum."""
    rate = Rate(burst=2, per_second=2.0**-31)
    now = 2.0**31 + 3 * QUANTUM
    memory = MemoryStore()
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live)
            for at in [now, now, now, now + 2**31 - QUANTUM]:
                assert await store.hit("k", rate, at) == memory.hit_nowait("k", rate, at)
            assert (await store.hit("k", rate, now + 2**31 - QUANTUM)).retry_after == QUANTUM
            tat = int(await live.execute("GET", "strands:rl:k"))
    assert tat == 2**52 + 2**51 + 3


async def test_one_atomic_script_per_hit(redis_url: str) -> None:
    """Fifty hits at once from concurrent tasks on one key: exactly the burst passes, each
    remaining count once."""
    rate = Rate(burst=10, per_second=0.001)
    decisions: list[Decision] = []
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live)

            async def hit() -> None:
                decisions.append(await store.hit("hot", rate))

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(hit)
    allowed = [d.remaining for d in decisions if d.allowed]
    assert sorted(allowed) == list(range(10))


# -- keys in Redis --------------------------------------------------------------------------


async def test_key_layout_and_expiry(redis_url: str) -> None:
    """A key is prefix + key and holds the TAT in quanta, by Redis's clock, as a decimal
    integer; it expires when its bucket is empty again (rounded up to the millisecond, plus
    2 ms); a refused hit leaves it alone. With a test's own clock, keys do not expire."""
    rate = Rate(burst=3, per_second=2)
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            store = RedisStore(live, prefix="app1:")
            start = trio.current_time()
            seconds, micros = await live.execute("TIME")
            for _ in range(3):
                await store.hit("m:ann", rate)
            ttl = await live.execute("PTTL", "app1:m:ann")
            tat = await live.execute("GET", "app1:m:ann")
            took = trio.current_time() - start  # more than passed between TIME and PTTL
            assert 1500 - 1000 * took <= ttl <= 1502
            assert tat.isdigit()
            time = int(seconds) * 2**20 + int(micros) * 2**20 // 10**6  # in quanta
            first = int(tat) - 1.5 * 2**20  # when the first hit was, by Redis's clock
            assert 0 <= first - time <= took * 2**20
            assert not (await store.hit("m:ann", rate)).allowed
            assert await live.execute("GET", "app1:m:ann") == tat
            assert 0 < await live.execute("PTTL", "app1:m:ann") <= ttl
            assert await live.execute("KEYS", "*") == [b"app1:m:ann"]

            await store.hit("virtual", rate, now=1_000_000.0)
            assert await live.execute("GET", "app1:virtual") == b"%d" % (1_000_000.5 * 2**20)
            assert await live.execute("PTTL", "app1:virtual") == -1


async def test_shared_by_two_replicas(redis_url: str) -> None:
    """Two backends, each with its own RateLimit and Redis connection, count a client's
    messages and an IP's connection requests in one bucket: the burst is spent across both,
    and either refuses the next, with its rate_limited frame."""
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live_1, connected(redis_url) as live_2:
            limits = [
                RateLimit(messages=SLOW, connections=SLOW, store=RedisStore(live))
                for live in (live_1, live_2)
            ]
            one, two = (MiddlewareHarness([limit]) for limit in limits)
            assert (await one.message("x", client_id="ann")).reached
            assert (await two.message("x", client_id="ann")).reached
            assert not (await one.message("x", client_id="ann")).reached
            assert not (await two.message("x", client_id="ann")).reached
            assert (await two.message("x", client_id="bob")).reached
            ((to, frame),) = one.sent
            assert to == "ann"
            assert json.loads(frame)["code"] == "rate_limited"
            assert json.loads(frame)["reason"].startswith("too many messages: retry in 1e+03 s")

            for harness in (one, two, one):
                await harness.connection_request(remote_addr="10.0.0.9:5")
            outcome = await two.connection_request(remote_addr="10.0.0.9:6")
            assert outcome.request is not None
            assert not outcome.request.accepted
            assert sorted(await live_1.execute("KEYS", "*")) == [
                b"strands:rl:c:10.0.0.9",
                b"strands:rl:m:ann",
                b"strands:rl:m:bob",
            ]
    assert [limit.statistics().messages_limited for limit in limits] == [1, 1]


# -- when Redis cannot answer ---------------------------------------------------------------


async def test_down_at_start_then_up(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Started while Redis is down, "allow_local" answers from the memory store (its burst
    holds per replica), logs one warning and counts; once Redis is up, hits are shared again,
    with one line saying so."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    redis_server.stop()
    with trio.fail_after(DEADLINE):
        async with open_live_redis(redis_server.url, backoff=QUICK) as live:
            store = RedisStore(live)
            decisions = [await store.hit("k", SLOW) for _ in range(3)]
            assert [d.allowed for d in decisions] == [True, True, False]
            assert decisions[2].retry_after == pytest.approx(1000, abs=1)
            stats(store, hits=3, redis_hits=0, fallback_hits=3, errors=3, outages=1)
            assert store.fallback is not None
            assert store.fallback.statistics().keys == 1
            assert not store.statistics().available

            await trio.to_thread.run_sync(redis_server.start)
            await live.wait_available()
            assert (await store.hit("k", SLOW)).allowed  # Redis's bucket: fresh
            stats(store, hits=4, redis_hits=1, fallback_hits=3, outages=1, available=True)
    (warning,) = messages(caplog, logging.WARNING)
    assert "unavailable" in warning
    assert "answering from this process's memory (limits hold per replica)" in warning
    (back,) = [m for m in messages(caplog, logging.INFO) if "is back" in m]
    assert "(3 hits answered by on_unavailable='allow_local' meanwhile)" in back


async def test_killed_refuse_then_restarted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed mid-way: "refuse" refuses every hit with retry_after one interval or 1 s,
    logged once; after a restart the hits are shared again, and the script, which the new
    server does not know, is sent again (NOSCRIPT, then EVAL)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    fast = Rate(burst=2, per_second=4)
    with trio.fail_after(DEADLINE):
        async with open_live_redis(redis_server.url, backoff=QUICK) as live:
            await live.wait_available()
            store = RedisStore(live, on_unavailable="refuse")
            assert store.fallback is None
            assert [(await store.hit("k", SLOW)).allowed for _ in range(3)] == [True, True, False]

            await trio.to_thread.run_sync(redis_server.kill)
            refusals = [await store.hit("k", SLOW) for _ in range(3)]
            refusals.append(await store.hit("f", fast))
            assert refusals == [Decision(allowed=False, retry_after=1.0, remaining=0)] * 3 + [
                Decision(allowed=False, retry_after=0.25, remaining=0)
            ]
            stats(store, hits=7, redis_hits=3, refused_unavailable=4, errors=4, outages=1)

            await live.wait_lost()
            await trio.to_thread.run_sync(redis_server.start)
            await live.wait_available()
            assert await live.execute("SCRIPT", "EXISTS", _GCRA.sha1) == [0]
            assert (await store.hit("k", SLOW)).allowed  # no persistence: a fresh bucket
            assert await live.execute("SCRIPT", "EXISTS", _GCRA.sha1) == [1]
            stats(store, hits=8, redis_hits=4, errors=4, outages=1, available=True)
    (warning,) = messages(caplog, logging.WARNING)
    assert "refusing every hit until it is back" in warning
    (back,) = [m for m in messages(caplog, logging.INFO) if "is back" in m]
    assert "(4 hits answered by on_unavailable='refuse' meanwhile)" in back


async def test_a_hung_redis_delays_one_hit_at_a_time(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that stops answering (SIGSTOP: the connection stays up) makes a hit wait the
    timeout, then the policy answers it; while one hit waits to find out whether Redis is
    back, the others are answered at once, without a call; when Redis answers again, the
    outage ends."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert redis_server.process is not None
    with trio.fail_after(DEADLINE):
        async with connected(redis_server.url) as live:
            store = RedisStore(live, timeout=0.05)
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                start = trio.current_time()
                assert (await store.hit("k", SLOW)).allowed  # answered locally
                assert trio.current_time() - start >= 0.05
                stats(store, fallback_hits=1, errors=1, timeouts=1, outages=1)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store.hit, "k", SLOW)  # the probe: waits the timeout
                    await trio.testing.wait_all_tasks_blocked()
                    start = trio.current_time()
                    assert await store.hit("k", SLOW) == Decision(  # the local burst's last
                        allowed=True, retry_after=0.0, remaining=0
                    )
                    assert trio.current_time() - start < 0.05
                    stats(store, fallback_hits=2, errors=1)
                stats(store, hits=3, fallback_hits=3, errors=2, timeouts=2, outages=1)
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
            assert (await store.hit("other", SLOW)).allowed
            stats(store, hits=4, redis_hits=1, outages=1, available=True)
    assert len(messages(caplog, logging.WARNING)) == 1
    assert "no reply within 0.05 s" in messages(caplog, logging.WARNING)[0]
    assert len([m for m in messages(caplog, logging.INFO) if "is back" in m]) == 1


@pytest.mark.parametrize("policy", ["allow_local", "refuse"])
async def test_error_replies_are_answered_by_the_policy(
    redis_url: str, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    """A key that something else wrote (WRONGTYPE, or a string that is no TAT) makes Redis
    answer with an error: the policy answers that hit, the error is logged at ERROR once a
    minute at most and counted, and other keys are still decided by Redis (no outage)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            await live.execute("HSET", "strands:rl:m:hash", "f", "v")
            await live.execute("SET", "strands:rl:m:text", "not a number")
            store = RedisStore(live, on_unavailable=policy)  # type: ignore[arg-type]
            local = [await store.hit(key, SLOW) for key in ("m:hash", "m:text", "m:hash")]
            assert [d.allowed for d in local] == (
                [True, True, True] if policy == "allow_local" else [False, False, False]
            )
            assert (await store.hit("m:ann", SLOW)).allowed
            stats(store, hits=4, redis_hits=1, errors=3, reply_errors=3, outages=0)
            assert store.statistics().available
    (error,) = messages(caplog, logging.ERROR)
    assert "'strands:rl:m:hash'" in error
    assert "WRONGTYPE" in error
    assert messages(caplog, logging.WARNING) == []


async def test_works_in_the_middleware_while_down(redis_server: RedisServer) -> None:
    """RateLimit over a RedisStore keeps serving while Redis is down: the local store's
    limit, a rate_limited frame past it; the middleware never sees an exception."""
    redis_server.stop()
    with trio.fail_after(DEADLINE):
        async with open_live_redis(redis_server.url, backoff=QUICK) as live:
            harness = MiddlewareHarness([RateLimit(messages=SLOW, store=RedisStore(live))])
            reached = [(await harness.message("x", client_id="ann")).reached for _ in range(3)]
    assert reached == [True, True, False]
    assert json.loads(harness.sent[0][1])["code"] == "rate_limited"


async def test_configuration_is_checked(redis_url: str) -> None:
    """A store that is not a LiveRedis, a prefix that is not a str, an unknown policy, a
    fallback with "refuse" or of the wrong type and a timeout that is not a positive number
    are refused when the store is made, saying what to pass."""
    with trio.fail_after(DEADLINE):
        async with connected(redis_url) as live:
            with pytest.raises(TypeError, match="redis must be a LiveRedis, from serve_live"):
                RedisStore(object())  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="prefix must be a str"):
                RedisStore(live, prefix=b"rl:")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="'allow_local' or 'refuse'"):
                RedisStore(live, on_unavailable="allow")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="with 'refuse' leave it out"):
                RedisStore(live, on_unavailable="refuse", fallback=MemoryStore())
            with pytest.raises(TypeError, match="fallback must be a MemoryStore"):
                RedisStore(live, fallback={})  # type: ignore[arg-type]
            for timeout in (0, -1, float("inf"), float("nan"), "1", True):
                with pytest.raises(ValueError, match="timeout must be a number of seconds"):
                    RedisStore(live, timeout=timeout)  # type: ignore[arg-type]
            store = RedisStore(live, prefix="x:", timeout=1)
            assert (store.prefix, store.on_unavailable, store.timeout) == ("x:", "allow_local", 1.0)
            assert "prefix='x:'" in repr(store)
            assert store.statistics() == RedisStoreStatistics(
                hits=0,
                redis_hits=0,
                fallback_hits=0,
                refused_unavailable=0,
                errors=0,
                timeouts=0,
                reply_errors=0,
                outages=0,
                available=True,
            )
