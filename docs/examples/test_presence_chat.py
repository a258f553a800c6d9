"""The presence chat example, end to end against the in-memory broker: one backend with
members in memory, then two replicas sharing them in a real Redis. Clients sign in with a
token in the query string, as a browser can (our broker sends it in the ``query`` field)."""

from functools import partial

import pytest
import trio

from strands_trio.testing import ConnectionRejected, open_fake_broker

from .presence_chat import app, serve_replica

pytest_plugins = ["tests._redis"]


async def test_presence_chat_in_memory() -> None:
    """A newcomer is told who is here, /who counts, a leave is announced with the count."""
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=False) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann = await broker.connect("/ws/lobby?token=t-ann")
            assert await ann.receive() == "here: Ann"
            with pytest.raises(ConnectionRejected) as refused:  # no token: no member
                await broker.connect("/ws/lobby")
            assert refused.value.close_code == 4401
            bob = await broker.connect("/ws/lobby?token=t-bob")
            assert await bob.receive() == "here: Ann, Bob"
            await bob.send("/who")
            assert await bob.receive() == "2 here"
            await bob.close()
            assert await ann.receive() == "Bob left, 1 here"


async def test_presence_chat_replicas_share_members(redis_url: str) -> None:
    """Two replicas on one broker, clients spread over both: each replica sees the members
    the other recorded."""
    with trio.fail_after(10):
        async with open_fake_broker(reference=False) as broker, trio.open_nursery() as nursery:
            start = partial(serve_replica, redis_url, connect=broker.open_backend_stream)
            first = await nursery.start(start)
            await broker.wait_backends(1)
            ann = await broker.connect("/ws/lobby?token=t-ann")  # to the first
            assert await ann.receive() == "here: Ann"
            await first.wait_synced()  # Ann is in Redis

            second = await nursery.start(start)
            await broker.wait_backends(2)
            bob = await broker.connect("/ws/lobby?token=t-bob")
            assert await bob.receive() == "here: Ann, Bob"
            await first.wait_synced()
            await second.wait_synced()
            cy = await broker.connect("/ws/lobby?token=t-cy")  # the other one
            assert await cy.receive() == "here: Ann, Bob, Cy"
            await first.wait_synced()
            await second.wait_synced()
            await ann.send("/who")
            assert await ann.receive() == "3 here"
            await cy.close()
            assert await ann.receive() == "Cy left, 2 here"
            nursery.cancel_scope.cancel()
