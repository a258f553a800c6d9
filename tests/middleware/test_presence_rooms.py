"""The presence middleware with clients in several rooms (join_room), on the memory store and
on RedisPresence shared by two instances (real redis-server)."""

from __future__ import annotations

import trio

from strands_trio.middleware import MemoryPresence, Presence
from strands_trio.testing import MiddlewareHarness

from .test_presence import names, start_instance

pytest_plugins = ["tests._redis"]


async def test_memory_presence_follows_joins_and_the_disconnect_leaves_all() -> None:
    presence = Presence(store=MemoryPresence(instance_id="here"))
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        await harness.new_connection("ann", room_id="home")
        presence.on_room_change("ann", "a", True)
        presence.on_room_change("ann", "b", True)
        presence.on_room_change("ann", "b", False)
        assert await presence.rooms() == {"home": 1, "a": 1}
        assert names(await presence.members("a")) == [("ann", "here")]
        await harness.disconnect("ann", room_id="home", rooms=["home", "a"])
        assert await presence.rooms() == {}
    stats = presence.statistics()
    assert (stats.rooms_joined, stats.rooms_left, stats.left) == (2, 1, 1)


async def test_a_store_without_rooms_is_counted_not_raised() -> None:
    class OneRoom(MemoryPresence):
        join_room = None  # type: ignore[assignment]

    presence = Presence(store=OneRoom(instance_id="x"))
    presence.on_room_change("ann", "a", True)  # logged, counted, no exception
    assert presence.statistics().store_errors == 1


async def test_redis_presence_with_several_rooms(redis_url: str, nursery: trio.Nursery) -> None:
    """Joined rooms are shared between instances; an instance's own changes show at once;
    a disconnection at another instance leaves every room it lists."""
    with trio.fail_after(10):
        a = await start_instance(nursery, redis_url, "a")
        b = await start_instance(nursery, redis_url, "b")
        await a.harness.new_connection("ann", room_id="home")
        await b.harness.new_connection("bob", room_id="games")
        a.presence.on_room_change("ann", "games", True)
        a.presence.on_room_change("ann", "chess", True)
        a.presence.on_room_change("ann", "home", True)  # its own: nothing
        assert names(await a.presence.members("chess")) == [("ann", "a")]  # read your writes
        await a.store.wait_synced()
        for instance in (a, b):
            assert sorted(names(await instance.presence.members("games"))) == [
                ("ann", "a"),
                ("bob", "b"),
            ]
            assert await instance.presence.rooms() == {"home": 1, "games": 2, "chess": 1}
        a.presence.on_room_change("ann", "chess", False)
        assert await a.presence.count("chess") == 0
        await a.store.wait_synced()
        assert await b.presence.count("chess") == 0
        # The disconnection reaches b, which lists every room: ann leaves all of them.
        await b.harness.disconnect("ann", room_id="home", rooms=["home", "games"])
        await b.store.wait_synced()
        await a.store.wait_synced()
        for instance in (a, b):
            assert names(await instance.presence.members("games")) == [("bob", "b")]
            assert await instance.presence.rooms() == {"games": 1}
