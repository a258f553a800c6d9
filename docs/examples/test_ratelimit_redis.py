"""The shared rate-limit example: two replicas, each on its own broker and Redis connection,
count one IP's connection requests in one bucket."""

import json

import pytest
import trio

from strands_trio.redis import open_live_redis
from strands_trio.testing import ConnectionRejected, open_fake_broker

from .ratelimit_redis import make_app

#: A real redis-server (tests/_redis.py): redis_url is the session's, emptied for each test.
pytest_plugins = ["tests._redis"]


async def test_two_replicas_share_the_limits(redis_url: str) -> None:
    """Ten connection requests from one IP pass, spread over two replicas; the eleventh is
    rejected by either; a client's burst of messages passes, the next gets rate_limited."""
    with trio.fail_after(10):
        async with (
            open_live_redis(redis_url) as redis_1,
            open_live_redis(redis_url) as redis_2,
            open_fake_broker() as broker_1,
            open_fake_broker() as broker_2,
        ):
            await redis_1.wait_available()
            await redis_2.wait_available()
            async with (
                make_app(redis_1).connected(connect=broker_1.open_backend_stream),
                make_app(redis_2).connected(connect=broker_2.open_backend_stream),
            ):
                brokers = [broker_1, broker_2] * 5
                clients = [await b.connect("/ws", remote_addr="10.0.0.7:1") for b in brokers]
                for broker in (broker_1, broker_2):
                    with pytest.raises(ConnectionRejected):
                        await broker.connect("/ws", remote_addr="10.0.0.7:2")
                ann = clients[0]
                for n in range(6):  # a burst of 5 messages, then a refusal
                    await ann.send(f"hi {n}")
                replies = [await ann.receive() for _ in range(6)]
                assert replies[:5] == [f"echo: hi {n}" for n in range(5)]
                assert json.loads(replies[5])["code"] == "rate_limited"
                keys = await redis_1.execute("KEYS", "*")
    assert sorted(keys) == [b"strands:rl:c:10.0.0.7", f"strands:rl:m:{ann.client_id}".encode()]
