"""``RedisHistory`` against a real redis-server: offsets from one script whichever instance
appends, bounds by count and age, a new epoch when Redis lost the room, and failures
reported as ``HistoryUnavailable`` while Redis is down."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from strands_trio.middleware import HistoryUnavailable, RedisHistory
from strands_trio.redis import Backoff, open_live_redis

if TYPE_CHECKING:
    from .._redis import RedisServer

pytest_plugins = ["tests._redis"]

QUICK = Backoff(first=0.01, maximum=0.05)


async def test_offsets_never_skip_nor_repeat_across_instances(redis_url: str) -> None:
    """Two stores on one Redis appending concurrently give the room offsets 1 to 200, each
    once, under one epoch; a recovery from any of them gets what came after an offset."""
    with trio.fail_after(10):
        async with open_live_redis(redis_url) as one, open_live_redis(redis_url) as two:
            await one.wait_available()
            await two.wait_available()
            a, b = RedisHistory(one), RedisHistory(two, size=500)
            got = []

            async def append(store: RedisHistory, n: int) -> None:
                got.append(await store.append("room", f'{{"n":{n}}}'))

            async with trio.open_nursery() as nursery:
                for n in range(200):
                    nursery.start_soon(append, a if n % 2 else b, n)
            since = await b.since("room", got[0].epoch, 190)
    assert sorted(p.offset for p in got) == list(range(1, 201))
    assert len({p.epoch for p in got}) == 1
    assert since.recovered
    assert [n for n, _ in since.messages] == list(range(191, 201))
    assert a.statistics().appended + b.statistics().appended == 200


async def test_a_client_that_saw_nothing_catches_up_from_the_start(redis_url: str) -> None:
    """("", 0) follows a room from its start, as with the memory store: everything while its
    first message is kept, nothing for a quiet room, too_old once the first is gone."""
    with trio.fail_after(10):
        async with open_live_redis(redis_url) as live:
            await live.wait_available()
            store = RedisHistory(live, size=3)
            empty = await store.since("quiet", "", 0)
            for n in range(1, 4):
                await store.append("a", f'{{"n":{n}}}')
            whole = await store.since("a", "", 0)
            await store.append("a", '{"n":4}')
            gone = await store.since("a", "", 0)
    assert (empty.recovered, empty.messages) == (True, ())
    assert whole.recovered
    assert [n for n, _ in whole.messages] == [1, 2, 3]
    assert (gone.recovered, gone.reason) == (False, "too_old")


async def test_size_and_age_bound_recovery(redis_url: str) -> None:
    """A recovery that would replay more than *size* messages, or messages older than
    *max_age*, is refused as ``too_old``."""
    with trio.fail_after(10):
        async with open_live_redis(redis_url) as live:
            await live.wait_available()
            store = RedisHistory(live, size=5, max_age=0.2)
            for _ in range(10):
                position = await store.append("room", "{}")
            too_many = await store.since("room", position.epoch, 2)
            fine = await store.since("room", position.epoch, 7)
            await trio.sleep(0.3)  # Redis's own clock ages the messages: no way to mock it
            aged = await store.since("room", position.epoch, 9)
            current = await store.since("room", position.epoch, 10)
    assert (too_many.recovered, too_many.reason) == (False, "too_old")
    assert [n for n, _ in fine.messages] == [8, 9, 10]
    assert (aged.recovered, aged.reason) == (False, "too_old")
    assert current.recovered
    assert current.messages == ()


async def test_a_flushed_redis_means_a_new_epoch(
    redis_url: str, redis_session_server: RedisServer
) -> None:
    """After FLUSHALL the room starts again from offset 1 under another epoch, and a client
    of the old epoch is told ``epoch_changed`` with the new position."""
    with trio.fail_after(10):
        async with open_live_redis(redis_url) as live:
            await live.wait_available()
            store = RedisHistory(live)
            before = await store.append("room", "{}")
            redis_session_server.command("FLUSHALL")
            lost = await store.since("room", before.epoch, 1)
            after = await store.append("room", "{}")
    assert (lost.recovered, lost.reason, lost.offset) == (False, "epoch_changed", 0)
    assert after.epoch == lost.epoch != before.epoch
    assert after.offset == 1


async def test_replayed_text_is_the_appended_text(redis_url: str) -> None:
    """What a recovery gives back is the text appended, unicode and all."""
    text = '{"type":"said","text":"héllo \\"you\\" ✓"}'
    with trio.fail_after(10):
        async with open_live_redis(redis_url) as live:
            await live.wait_available()
            store = RedisHistory(live)
            position = await store.append("r{x}", text)
            since = await store.since("r{x}", position.epoch, 0)
    assert since.messages == ((1, text),)


async def test_redis_down_raises_unavailable_and_recovers(redis_server: RedisServer) -> None:
    """While Redis is down, appends and recoveries raise HistoryUnavailable (counted, one
    outage); once it is back, they work again under a new epoch (it lost everything)."""
    with trio.fail_after(20):
        async with open_live_redis(redis_server.url, backoff=QUICK) as live:
            await live.wait_available()
            store = RedisHistory(live)
            before = await store.append("room", "{}")
            await trio.to_thread.run_sync(redis_server.stop)
            with pytest.raises(HistoryUnavailable, match="room 'room'"):
                await store.append("room", "{}")
            with pytest.raises(HistoryUnavailable):
                await store.since("room", before.epoch, 1)
            await trio.to_thread.run_sync(redis_server.start)
            await live.wait_available()
            after = await store.append("room", "{}")
    assert after.epoch != before.epoch
    assert after.offset == 1
    stats = store.statistics()
    assert (stats.failures, stats.outages) == (2, 1)


class Stub:
    async def execute(self, *args: object) -> None:
        raise AssertionError("never called")


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"max_age": 0}, {"ttl": 0.5}, {"prefix": ""}])
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    """Settings that cannot work are refused when the store is made."""
    with pytest.raises(ValueError, match="must be"):
        RedisHistory(Stub(), **kwargs)  # type: ignore[arg-type]
