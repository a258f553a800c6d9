"""The pieces every user of Redis shares: OutageLog's two lines per outage, and Membership's
rounds (renew, resync when the key was gone, sweep; writes between rounds) on a real
redis-server, through a fake owner that records what it was asked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from strands_trio.redis import (
    LIVENESS_LUA,
    Backoff,
    LiveRedis,
    Membership,
    OutageLog,
    OutageStatistics,
    RedisReplyError,
    Script,
    serve_live_redis,
)

if TYPE_CHECKING:
    from .._redis import RedisServer

pytest_plugins = ["tests._redis"]

QUICK = Backoff(first=0.01, maximum=0.05)
LOGGER = "tests.outage"


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The first failure logs a warning with its reason, the next ones only at DEBUG; the
    end logs how long it lasted and what was counted in it; counts outside an outage are
    ignored, and an end without an outage logs nothing."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    outage = OutageLog(
        logging.getLogger(LOGGER), "thing a: Redis", meanwhile="waiting", counted="calls refused"
    )
    outage.count(5)  # no outage on: not counted
    outage.ended()  # nothing to end
    assert outage.failed(ConnectionError("refused"))
    assert outage.on
    outage.count()
    await trio.sleep(1.5)
    assert not outage.failed("again")
    outage.count(2)
    outage.ended()
    assert records(caplog) == [
        (logging.WARNING, "thing a: Redis is unavailable (refused); waiting"),
        (logging.DEBUG, "thing a: Redis is still unavailable: again"),
        (logging.INFO, "thing a: Redis is back after 1.50 s (3 calls refused meanwhile)"),
    ]
    assert outage.statistics() == OutageStatistics(on=False, outages=1, counted=3)
    caplog.clear()
    quiet = OutageLog(logging.getLogger(LOGGER), "feed", meanwhile="later", counted=None)
    quiet.failed("gone")
    quiet.ended()
    assert records(caplog)[-1] == (logging.INFO, "feed is back after 0.00 s")
    assert repr(quiet) == "<OutageLog 'feed' off>"


#: A member's renew and sweep scripts, as an owner writes them on LIVENESS_LUA.
RENEW = Script(LIVENESS_LUA + "return renew(ARGV[1], ARGV[1] .. 'members', ARGV[2], ARGV[3])")
SWEEP = Script(
    LIVENESS_LUA
    + """
local cleared = 0
local function clear(member)
  cleared = cleared + redis.call('DEL', ARGV[1] .. 'things:' .. member)
end
sweep(ARGV[1], ARGV[1] .. 'members', clear)
return cleared
"""
)


class Owner:
    """A member that registers one key of things, and records each step it was asked."""

    def __init__(self, live: LiveRedis, name: str, ttl_ms: int) -> None:
        self.live, self.name, self.ttl_ms = live, name, ttl_ms
        self.steps: list[str] = []
        self.things = 3
        self.fail_renew: RedisReplyError | None = None
        self.pending_writes = 0

    async def renew(self) -> bool:
        self.steps.append("renew")
        if self.fail_renew is not None:
            error, self.fail_renew = self.fail_renew, None
            raise error
        return bool(await RENEW(self.live, args=["m:", self.name, self.ttl_ms]))

    async def resync(self) -> int:
        self.steps.append("resync")
        await self.live.execute("SET", f"m:things:{self.name}", self.things)
        return self.things

    async def sweep(self) -> int:
        self.steps.append("sweep")
        cleared: int = await SWEEP(self.live, args=["m:"])
        return cleared

    @property
    def pending(self) -> bool:
        return self.pending_writes > 0

    async def flush(self) -> None:
        self.steps.append("flush")
        self.pending_writes -= 1


@pytest.fixture
async def live(redis_url: str) -> AsyncIterator[LiveRedis]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(partial(serve_live_redis, redis_url, backoff=QUICK))
        nursery.cancel_scope.cancel()


async def test_rounds_resync_at_start_and_after_a_lapse_and_sweep_the_dead(
    live: LiveRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The first round registers everything; a key found gone later is a lapse (one
    warning, counted); a member whose key expired is swept; writes go between rounds."""
    caplog.set_level(logging.INFO, logger="strands_trio.redis")
    owner = Owner(live, "a", 10_000)
    membership = Membership(
        owner, ttl=10.0, who="thing a", member="thing", registered="things", writes=owner
    )
    with pytest.raises(RuntimeError, match="not serving"):
        await membership.wait_round()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.serve, live)
            with pytest.raises(RuntimeError, match="already serving"):
                await membership.serve(live)
            await membership.wait_ready()
            assert owner.steps == ["renew", "resync", "sweep"]
            assert membership.synced

            await live.execute("SADD", "m:members", "dead")  # no alive key: swept
            await live.execute("SET", "m:things:dead", 1)
            await live.execute("DEL", "m:alive:a")  # a lapse
            owner.pending_writes = 2
            membership.wake()
            await membership.wait_synced()
            # The round asked for comes first, then the writes, one batch each.
            assert owner.steps[3:] == ["renew", "resync", "sweep", "flush", "flush"]
            assert await live.execute("EXISTS", "m:things:dead") == 0
            assert await live.execute("SMEMBERS", "m:members") == [b"a"]

            membership.resync_needed()  # a registration failed: again at the next round
            assert not membership.synced
            await membership.wait_round()
            assert owner.steps[-3:] == ["renew", "resync", "sweep"]
            statistics = membership.statistics()
            nursery.cancel_scope.cancel()
    assert (statistics.renewals, statistics.resyncs, statistics.lapses) == (3, 3, 1)
    assert (statistics.resynced, statistics.swept) == (3, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "thing a: this thing's liveness key was gone (Redis restarted or flushed, or no "
        "renewal for 10 s): registering its 3 things again"
    ]


async def test_an_error_reply_is_retried_after_a_backoff_and_logged_as_an_outage(
    live: LiveRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that gets an error reply ends the round; the round runs again after a backoff
    delay, and the outage is logged once when it starts and once when a round goes
    through."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    owner = Owner(live, "b", 10_000)
    outage = OutageLog(logging.getLogger(LOGGER), "thing b: Redis", meanwhile="m", counted=None)
    membership = Membership(
        owner, ttl=10.0, who="thing b", member="thing", registered="things", outage=outage
    )
    owner.fail_renew = RedisReplyError("ERR boom")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.serve, live)
            await membership.wait_ready()
            nursery.cancel_scope.cancel()
    assert owner.steps == ["renew", "renew", "resync", "sweep"]
    assert [level for level, _ in records(caplog)] == [logging.WARNING, logging.INFO]
    assert outage.statistics().outages == 1


async def test_redis_restarted_empty_makes_the_member_register_again(
    redis_server: RedisServer,
) -> None:
    """A new connection runs a round at once; Redis came back empty, so the key was gone:
    everything is registered again, and the wait for a round waits out the outage."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            live = await nursery.start(partial(serve_live_redis, redis_server.url, backoff=QUICK))
            owner = Owner(live, "c", 60_000)
            membership = Membership(owner, ttl=60.0, who="c", member="thing", registered="things")
            await nursery.start(membership.serve, live)
            await membership.wait_ready()
            await trio.to_thread.run_sync(redis_server.kill)
            await live.wait_lost()
            assert not membership.synced
            await trio.to_thread.run_sync(redis_server.start)
            await membership.wait_synced()
            assert await live.execute("GET", "m:things:c") == b"3"
            assert membership.statistics().lapses == 1
            nursery.cancel_scope.cancel()
