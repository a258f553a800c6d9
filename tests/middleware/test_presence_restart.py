"""Presence after a broker restart: members are recorded with the broker link they were
learnt through; a link to a new instance of the same broker drops them, a reconnection to the
same instance keeps them, a broker without hello costs the previous link's members; in one
process and shared in Redis by replicas."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from strands_trio import BrokerIdentity, BrokerLink, Context, StrandsApp
from strands_trio.middleware import Member, MemoryPresence, Presence, RedisPresence
from strands_trio.redis import Backoff, serve_live_redis
from strands_trio.testing import MiddlewareHarness, open_fake_broker

if TYPE_CHECKING:
    from strands_trio import ExecutionContext

pytest_plugins = ["tests._redis"]

QUICK = Backoff(first=0.01, maximum=0.05)


def link(name: str | None, instance: str = "", number: int = 1, up: bool = True) -> BrokerLink:
    identity = None if name is None else BrokerIdentity(name=name, instance=instance)
    return BrokerLink(up=up, where="b:8081", number=number, identity=identity)


def ids(members: list[Member]) -> list[str]:
    return [m.client_id for m in members]


# ---------------------------------------------------------------------- the memory store


async def test_a_new_instance_of_the_broker_drops_what_was_learnt_through_the_old() -> None:
    """Members learnt through instance i1 of broker B go when B comes back as i2; members of
    another broker, and those learnt through i2, stay."""
    presence = Presence(store=MemoryPresence(instance_id="here"))
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        presence.on_broker_link(link("B", "i1"))
        await harness.new_connection("ann", room_id="lobby")
        await harness.new_connection("bob", room_id="attic")
        presence.on_broker_link(link("C", "c1"))
        await harness.new_connection("cy", room_id="lobby")
        ann = (await presence.members("lobby"))[0]
        assert (ann.broker, ann.broker_instance) == ("B", "i1")
        presence.on_broker_link(link("B", "i1", number=2, up=False))  # a down: nothing
        presence.on_broker_link(link("B", "i2", number=3))
        assert ids(await presence.members("lobby")) == ["cy"]
        assert await presence.rooms() == {"lobby": 1}
        await harness.new_connection("dan", room_id="lobby")
        presence.on_broker_link(link("B", "i2", number=4))  # a reconnection: kept
        assert ids(await presence.members("lobby")) == ["cy", "dan"]
    statistics = presence.statistics()
    assert (statistics.dropped, statistics.restarts) == (2, 1)


async def test_without_hello_a_new_link_drops_the_previous_links_members() -> None:
    """A broker that sends no hello cannot say it restarted: the members learnt through the
    previous link go when the next comes up, and a live client heals at its next message."""
    presence = Presence()
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        presence.on_broker_link(link(None, number=1))
        await harness.new_connection("ann", room_id="lobby")
        await harness.new_connection("bob", room_id="lobby")
        presence.on_broker_link(link(None, number=2))
        assert await presence.members("lobby") == []
        await harness.message("still here", client_id="ann", room_id="lobby")
        assert ids(await presence.members("lobby")) == ["ann"]
    assert presence.statistics().dropped == 2
    assert presence.statistics().healed == 1


async def test_drops_are_logged_once_at_info_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One INFO line per drop, saying how many; nothing when nothing was dropped."""
    presence = Presence()
    harness = MiddlewareHarness([presence])
    caplog.set_level(logging.INFO, "strands_trio.middleware.presence")
    with trio.fail_after(5):
        presence.on_broker_link(link("B", "i1"))
        await harness.new_connection("ann", room_id="lobby")
        await harness.new_connection("bob", room_id="lobby")
        presence.on_broker_link(link("B", "i1", number=2))
        presence.on_broker_link(link("B", "i2", number=3))
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == ["presence: dropped 2 member(s) learnt through broker B before it restarted"]


# ---------------------------------------------------------------------- through the app


def _app(presence: Presence, heard: list[BrokerLink]) -> StrandsApp:
    class Listener:
        """A middleware that only listens to link changes."""

        def on_broker_link(self, link: BrokerLink) -> None:
            heard.append(link)

        async def __call__(self, ctx: ExecutionContext, call_next: Any) -> None:
            await call_next(ctx)

    class Broken(Listener):
        def on_broker_link(self, link: BrokerLink) -> None:
            raise RuntimeError("boom")

    app = StrandsApp(middleware=[Broken(), presence, Listener()])

    @app.on_message
    async def who(message: str, context: Context) -> None:
        here = ",".join(ids(await presence.members(context.room_id)))
        await app.send_private_message(context.client_id, f"here: {here}")

    return app


async def test_a_fake_broker_restart_empties_the_list_and_a_reconnection_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through FakeBroker(reference=False): the app learns the broker's identity from its
    hello and tells listeners (one that raises is logged, the others still hear); a dropped
    link to the same instance keeps the members, a restart (new instance) drops them."""
    presence, heard = Presence(), []
    app = _app(presence, heard)
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=False) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann, bob = await broker.connect(), await broker.connect()
            await ann.send("?")
            assert (await ann.receive()).startswith("here: ")
            first = app.broker_link
            assert first is not None
            assert first.identity is not None
            assert first.identity.instance == broker.instance
            assert await presence.count(ann.room_id) == 2

            await broker.drop_backends()  # the same instance: a reconnection
            await broker.wait_backends(1)
            await ann.send("?")
            assert len((await ann.receive()).split(",")) == 2
            assert presence.statistics().dropped == 0

            old = broker.instance
            await broker.restart()
            await broker.wait_backends(1)
            await bob.send("?")  # heals bob: the only member learnt through the new one
            assert await bob.receive() == f"here: {bob.client_id}"
            assert app.broker_link is not None
            assert app.broker_link.identity is not None
            assert app.broker_link.identity.instance == broker.instance != old
    assert presence.statistics().dropped == 2
    assert presence.statistics().restarts == 1
    assert [(h.up, h.number) for h in heard] == [(True, 1), (False, 1), (True, 2), (False, 2),
                                                  (True, 3), (False, 3)]  # fmt: skip
    assert any("on_broker_link" in r.getMessage() for r in caplog.records)


async def test_the_reference_fake_broker_sends_no_hello_and_a_new_link_drops_members() -> None:
    """FakeBroker(reference=True) sends no hello: the link's identity is None; after the link
    drops, the next link's first frame drops the previous link's members, and a client
    heals when it speaks."""
    presence, heard = Presence(), []
    app = _app(presence, heard)
    with trio.fail_after(5):
        async with (
            open_fake_broker() as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann, bob = await broker.connect(), await broker.connect()
            await ann.send("?")
            assert len((await ann.receive()).split(",")) == 2
            assert app.broker_link is not None
            assert app.broker_link.identity is None
            await broker.drop_backends()
            await broker.wait_backends(1)
            await bob.send("?")
            assert await bob.receive() == f"here: {bob.client_id}"
    assert presence.statistics().dropped == 2
    assert all(h.identity is None for h in heard)


# ---------------------------------------------------------------------- in Redis


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def _replica(nursery: trio.Nursery, url: str, name: str) -> tuple[RedisPresence, Presence]:
    async def run(task_status: trio.TaskStatus[RedisPresence]) -> None:
        async with trio.open_nursery() as inner:
            live = await inner.start(partial(serve_live_redis, url, backoff=QUICK))
            store = RedisPresence(live, instance_id=name, ttl=5.0)
            await inner.start(store.serve)
            task_status.started(store)

    store = await nursery.start(run)
    return store, Presence(store=store)


async def test_redis_replicas_drop_a_restarted_brokers_members_once(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """Two replicas learnt clients through broker B (instance i1) and one through C; when
    the first replica's link comes up to i2, Redis loses every replica's B/i1 members in one
    script; the second replica, coming up to i2 in turn, forgets its own and removes nothing
    more; members learnt through i2 or through C stay."""
    with trio.fail_after(10):
        (sa, a), (sb, b) = (
            await _replica(nursery, redis_url, "a"),
            await _replica(nursery, redis_url, "b"),
        )
        ha, hb = MiddlewareHarness([a]), MiddlewareHarness([b])
        a.on_broker_link(link("B", "i1"))
        b.on_broker_link(link("B", "i1"))
        await ha.new_connection("ann", room_id="lobby")
        await hb.new_connection("bob", room_id="lobby")
        b.on_broker_link(link("C", "c1"))
        await hb.new_connection("cy", room_id="lobby")
        await sa.wait_synced()
        await sb.wait_synced()
        assert ids(await a.members("lobby")) == ["ann", "bob", "cy"]

        a.on_broker_link(link("B", "i2", number=2))
        b.on_broker_link(link("B", "i2", number=2))  # each replica forgets its own at once
        assert (sa.statistics().dropped, sb.statistics().dropped) == (1, 1)
        assert ids(await a.members("lobby")) == ["cy"]  # before or after the script ran
        await ha.new_connection("dan", room_id="lobby")
        await sa.wait_synced()
        await sb.wait_synced()
        for replica in (a, b):
            assert ids(await replica.members("lobby")) == ["cy", "dan"]
        # One script removed ann and bob; the other found nothing more.
        removed = sorted((sa.statistics().drop_removed, sb.statistics().drop_removed))
        assert removed == [0, 2]
        assert (sa.statistics().members, sb.statistics().members) == (1, 1)  # dan; cy
        dan = (await b.members("lobby"))[1]
        assert (dan.broker, dan.broker_instance) == ("B", "i2")
    assert a.statistics().dropped == 1
    assert b.statistics().dropped == 1
