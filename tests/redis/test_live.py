"""LiveRedis and LivePubSub against a real redis-server of the test's own, stopped, killed
and started again: they start while Redis is down, refuse calls at once meanwhile, come back
by themselves, subscribe again, and log each outage once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

from strands_trio.redis import (
    Backoff,
    LiveRedis,
    Message,
    RedisUnavailable,
    open_live_pubsub,
    open_live_redis,
)

if TYPE_CHECKING:
    from .._redis import RedisServer

pytest_plugins = ["tests._redis"]

#: Quick attempts: a restarted server is found within a few tens of milliseconds.
QUICK = Backoff(first=0.01, maximum=0.05)


async def test_backoff_delays_and_validation() -> None:
    """Delays grow by the factor up to the maximum, each jittered down by at most jitter."""
    exact = Backoff(first=0.1, maximum=0.5, factor=2, jitter=0)
    delays = exact.delays()
    assert [next(delays) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = Backoff(first=1, maximum=1, jitter=0.1).delays()
    assert all(0.9 <= next(jittered) <= 1 for _ in range(100))
    for bad in ({"first": 0}, {"factor": 0.5}, {"jitter": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Backoff(**bad)  # type: ignore[arg-type]


async def test_live_redis_outlives_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Started while Redis is down, calls are refused at once; when Redis starts it connects;
    when Redis is killed and started again it comes back; one warning per outage."""
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="strands_trio.redis")
    with trio.fail_after(20):
        async with open_live_redis(redis_server.url, backoff=QUICK) as live:
            with pytest.raises(RedisUnavailable, match="unavailable"):
                await live.execute("PING")
            assert not live.available
            await trio.to_thread.run_sync(redis_server.start)
            await live.wait_available()
            assert await live.execute("SET", "k", "v") == b"OK"

            await trio.to_thread.run_sync(redis_server.kill)
            await live.wait_lost()
            for _ in range(3):
                with pytest.raises(RedisUnavailable):
                    await live.execute_many([("GET", "k")])
            await trio.to_thread.run_sync(redis_server.start)
            await live.wait_available()
            assert await live.execute("GET", "k") is None  # no persistence: a fresh server

            stats = live.statistics()
    assert (stats.available, stats.connects, stats.losses, stats.refused) == (True, 2, 1, 4)
    assert stats.connect_failures >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    recoveries = [r.getMessage() for r in caplog.records if " is back after " in r.getMessage()]
    assert len(warnings) == 2  # one per outage, however many attempts each took
    assert len(recoveries) == 2
    assert "(3 calls refused meanwhile)" in recoveries[1]


async def test_live_pubsub_subscribes_again_after_a_restart(redis_server: RedisServer) -> None:
    """Channels asked for are subscribed on every connection; on_connect marks each one;
    an unsubscribed channel stays unsubscribed; an on_message that raises is counted and
    delivery goes on."""
    send, receive = trio.open_memory_channel[bytes](100)
    connections = []

    def on_message(message: Message) -> None:
        if message.data == b"boom":
            raise RuntimeError("a bug in the handler")
        send.send_nowait(message.channel + b":" + message.data)

    async def publish(live: LiveRedis, channel: str, data: str) -> int:
        receivers: int = await live.execute("PUBLISH", channel, data)
        return receivers

    with trio.fail_after(20):
        async with (
            open_live_redis(redis_server.url, backoff=QUICK) as redis,
            open_live_pubsub(
                redis_server.url,
                on_message,
                on_connect=lambda: connections.append(trio.current_time()),
                backoff=QUICK,
            ) as pubsub,
        ):
            await pubsub.subscribe("a", b"b")
            await pubsub.unsubscribe("b")
            assert pubsub.channels == {b"a"}
            await redis.wait_available()
            await pubsub.wait_available()
            assert await publish(redis, "a", "boom") == 1
            assert await publish(redis, "a", "one") == 1
            assert await receive.receive() == b"a:one"

            await trio.to_thread.run_sync(redis_server.kill)
            await pubsub.wait_lost()
            await pubsub.subscribe("c")  # while down: remembered, subscribed on reconnection
            await trio.to_thread.run_sync(redis_server.start)
            await redis.wait_available()
            await pubsub.wait_available()
            assert await publish(redis, "b", "unwanted") == 0
            assert await publish(redis, "c", "two") == 1
            assert await publish(redis, "a", "three") == 1
            assert [await receive.receive() for _ in range(2)] == [b"c:two", b"a:three"]
            stats = pubsub.statistics()
    assert len(connections) == 2
    assert (stats.connects, stats.losses, stats.callback_errors) == (2, 1, 1)
    assert stats.received == 4


async def test_subscribe_while_a_connection_subscribes_is_not_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel asked for while a new connection is still subscribing to the earlier ones
    is subscribed on that connection too (in the cluster: a room whose first client joins
    while the subscriber reconnects)."""
    from strands_trio.redis import _pubsub

    real = _pubsub.PubSub.subscribe
    entered, gate = trio.Event(), trio.Event()

    async def held(self: _pubsub.PubSub, *channels: str | bytes) -> None:
        entered.set()
        await gate.wait()
        await real(self, *channels)

    monkeypatch.setattr(_pubsub.PubSub, "subscribe", held)
    with trio.fail_after(10):
        async with (
            open_live_pubsub(redis_url, lambda message: None, backoff=QUICK) as live,
            open_live_redis(redis_url, backoff=QUICK) as redis,
        ):
            await live.subscribe("a")  # no connection yet: wanted
            await entered.wait()  # the connection is subscribing to a
            await live.subscribe("b")
            gate.set()
            await live.wait_available()
            await redis.wait_available()
            assert await redis.execute("PUBSUB", "NUMSUB", "a", "b") == [b"a", 1, b"b", 1]


async def test_on_idle_ends_each_burst(redis_url: str) -> None:
    """on_idle is called after a message when no other is waiting: a burst that arrived
    together ends with one call, after all of its messages."""
    calls: list[str] = []
    burst = trio.Event()

    def on_message(message: Message) -> None:
        calls.append(message.data.decode())

    def on_idle() -> None:
        calls.append("idle")
        if len(calls) > 3:
            burst.set()

    with trio.fail_after(10):
        async with (
            open_live_pubsub(redis_url, on_message, on_idle=on_idle, backoff=QUICK) as live,
            open_live_redis(redis_url, backoff=QUICK) as redis,
        ):
            await live.subscribe("burst")
            await live.wait_available()
            await redis.wait_available()
            # One pipeline, one write: the three messages reach the subscriber together.
            await redis.execute_many([("PUBLISH", "burst", str(n)) for n in range(3)])
            await burst.wait()
    assert calls == ["0", "1", "2", "idle"]
