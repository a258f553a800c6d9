"""The presence middleware: members recorded before the handler, removed at disconnect,
healed from messages, never in the way of an event; the memory store in one process; the
Redis store shared by instances, expiring a dead instance's members, surviving Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import (
    IDENTITY,
    Identity,
    Member,
    MemoryPresence,
    Presence,
    PresenceUnavailable,
    RedisPresence,
    by_identity,
    by_metadata,
)
from strands_trio.redis import Backoff, LiveRedis, open_live_redis, serve_live_redis
from strands_trio.testing import FakeBroker, MiddlewareHarness, open_fake_broker

if TYPE_CHECKING:
    from .._redis import RedisServer

pytest_plugins = ["tests._redis"]

#: Quick reconnection: a restarted server is found within tens of milliseconds.
QUICK = Backoff(first=0.01, maximum=0.05)


def names(members: list[Member]) -> list[tuple[str, str]]:
    return [(m.client_id, m.instance) for m in members]


# ---------------------------------------------------------------------- the middleware


async def test_new_connection_is_recorded_before_the_handler() -> None:
    """A new_connection handler finds the newcomer among the room's members."""
    presence = Presence(store=MemoryPresence(instance_id="here"))
    seen: list[list[Member]] = []

    async def on_new_connection(context: Context) -> None:
        seen.append(await presence.members(context.room_id))

    harness = MiddlewareHarness([presence], handlers={"on_new_connection": on_new_connection})
    start = time.time()
    with trio.fail_after(5):
        await harness.new_connection("ann", room_id="lobby")
        outcome = await harness.new_connection("bob", room_id="lobby")
    assert outcome.reached
    ann, bob = seen[1]
    assert ann == Member(client_id="ann", room="lobby", instance="here", joined_at=ann.joined_at)
    assert (bob.client_id, bob.instance, bob.fields) == ("bob", "here", {})
    assert start <= ann.joined_at <= bob.joined_at <= time.time()
    assert presence.statistics().joined == 2


async def test_disconnect_is_removed_before_the_handler() -> None:
    """A disconnect handler counts the leaver out; the room disappears with its last member."""
    presence = Presence()
    counts: list[int] = []

    async def on_disconnect(context: Context) -> None:
        counts.append(await presence.count(context.room_id))

    harness = MiddlewareHarness([presence], handlers={"on_disconnect": on_disconnect})
    with trio.fail_after(5):
        await harness.new_connection("ann", room_id="lobby")
        await harness.new_connection("bob", room_id="lobby")
        await harness.new_connection("cy", room_id="attic")
        assert await presence.rooms() == {"lobby": 2, "attic": 1}
        await harness.disconnect("ann", room_id="lobby")
        await harness.disconnect("cy", room_id="attic")
        assert await presence.rooms() == {"lobby": 1}
    assert counts == [1, 0]
    assert presence.statistics().left == 2


async def test_other_events_pass_through_untouched() -> None:
    """Requests, errors and messages from known clients reach the handler as they came, and
    the store is not written."""
    store = MemoryPresence()
    presence = Presence(store=store)
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        request = await harness.connection_request("/ws/lobby")
        await harness.new_connection("ann", room_id="lobby", metadata={"k": 1})
        message = await harness.message("hi", client_id="ann", room_id="lobby", metadata={"k": 1})
        error = await harness.error("boom", client_id="ann", room_id="lobby")
    assert request.reached
    assert request.accepted
    assert message.args is not None
    assert message.args[0] == "hi"
    assert message.args[1] == Context(client_id="ann", room_id="lobby", metadata={"k": 1})
    assert error.reached
    assert store.statistics().members == 1
    assert presence.statistics().healed == 0


async def test_a_message_from_an_unknown_client_heals_it() -> None:
    """A client this backend never saw connect is recorded at its first message; with
    heal=False it is not."""
    presence = Presence(fields={"name": by_metadata("name")})
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        outcome = await harness.message("hi", client_id="ann", metadata={"name": "Ann"})
        await harness.message("again", client_id="ann", metadata={"name": "Ann"})
        [ann] = await presence.members("room")
    assert outcome.reached
    assert (ann.client_id, ann.fields) == ("ann", {"name": "Ann"})
    assert presence.statistics().healed == 1  # once: then it is known

    off = Presence(heal=False)
    with trio.fail_after(5):
        await MiddlewareHarness([off]).message("hi", client_id="ann")
        assert await off.members("room") == []


async def test_fields_come_from_key_functions() -> None:
    """Fields are what their functions return for the event; None leaves a field out."""
    presence = Presence(
        fields={"user": by_identity, "name": by_metadata("name"), "none": lambda ctx: None}
    )
    harness = MiddlewareHarness([presence])
    identity = Identity(subject="ann-42", roles=("member",))
    metadata = {IDENTITY.name: IDENTITY.converter.unstructure(identity), "name": "Ann"}
    with trio.fail_after(5):
        await harness.new_connection("c1", room_id="lobby", metadata=metadata)
        [member] = await presence.members("lobby")
    assert member.fields == {"user": "ann-42", "name": "Ann"}


class _BrokenStore(MemoryPresence):
    def join(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        raise RuntimeError("disk full")

    def leave(self, client_id: str, room: str) -> None:
        raise RuntimeError("disk full")


async def test_a_failing_store_never_fails_the_event(caplog: pytest.LogCaptureFixture) -> None:
    """A store that raises is logged and counted; the event still reaches its handler."""
    presence = Presence(store=_BrokenStore())
    harness = MiddlewareHarness([presence])
    with trio.fail_after(5):
        joined = await harness.new_connection("ann")
        left = await harness.disconnect("ann")
    assert joined.reached
    assert left.reached
    assert presence.statistics().store_errors == 2
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert "new_connection of client ann" in caplog.records[0].getMessage()


async def test_configuration_is_checked() -> None:
    """Bad stores, fields, heal flags and instance ids are refused when made, saying what is
    expected."""
    with pytest.raises(TypeError, match=r"'store' must be <class '.*PresenceStore'>"):
        Presence(store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'heal' must be <class 'bool'>"):
        Presence(heal="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must map names"):
        Presence(fields=[by_identity])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fields\\['x'\\]"):
        Presence(fields={"x": "subject"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty"):
        Presence(fields={"": by_identity})
    with pytest.raises(ValueError, match="instance_id"):
        MemoryPresence(instance_id="")


async def test_memory_store_moves_a_client_between_rooms() -> None:
    """A client recorded again in another room leaves the first one."""
    store = MemoryPresence(instance_id="x")
    store.join("ann", "a", {})
    store.join("ann", "b", {})
    assert store.rooms_nowait() == {"b": 1}
    assert store.knows("ann", "b")
    assert not store.knows("ann", "a")
    store.leave("ann", "b")
    store.leave("ann", "b")  # twice: nothing to do
    assert store.statistics().members == 0


def test_member_json_round_trip_and_errors() -> None:
    """A member survives its JSON; anything else is refused with where it is wrong."""
    member = Member(client_id="c", room="r", instance="i", joined_at=1.5, fields={"a": "b"})
    assert Member.from_json(member.to_json()) == member
    with pytest.raises(ValueError, match="JSON object"):
        Member.from_json(b"[1]")
    with pytest.raises(ValueError, match="JSON object"):
        Member.from_json(b"{")
    with pytest.raises(ValueError, match=r"\$\.room"):
        Member.from_json(b'{"client_id": "c", "instance": "i", "joined_at": 1}')
    with pytest.raises(ValueError, match=r"\$\.joined_at"):
        Member.from_json(b'{"client_id": "c", "room": "r", "instance": "i", "joined_at": true}')
    with pytest.raises(ValueError, match=r"\$\.fields"):
        Member.from_json(
            b'{"client_id": "c", "room": "r", "instance": "i", "joined_at": 1, "fields": {"a": 1}}'
        )


# ---------------------------------------------------------------------- end to end, in memory


def _chat(presence: Presence) -> StrandsApp:
    """An app that tells a newcomer who is here, and the room who left."""
    app = StrandsApp(middleware=[presence])

    @app.on_connection_request
    async def place(request: ConnectionRequestContext) -> bool:
        request.context.client_id = request.header("x-user") or request.context.client_id
        request.context.room_id = "lobby"
        return True

    @app.on_new_connection
    async def joined(context: Context) -> None:
        here = ",".join(m.client_id for m in await presence.members(context.room_id))
        await app.send_private_message(context.client_id, f"here: {here}")

    @app.on_message
    async def who(message: str, context: Context) -> None:
        here = ",".join(m.client_id for m in await presence.members(context.room_id))
        await app.send_private_message(context.client_id, f"here: {here}")

    @app.on_disconnect
    async def left(context: Context) -> None:
        count = await presence.count(context.room_id)
        await app.send_room_message(context.room_id, f"{context.client_id} left, {count} here")

    return app


async def test_end_to_end_with_the_fake_broker() -> None:
    """Through a broker: a newcomer is told who is here, the room who left."""
    presence = Presence()
    app = _chat(presence)
    with trio.fail_after(5):
        async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
            ann = await broker.connect(headers={"X-User": "ann"})
            assert await ann.receive() == "here: ann"
            bob = await broker.connect(headers={"X-User": "bob"})
            assert await bob.receive() == "here: ann,bob"
            await bob.close()
            assert await ann.receive() == "bob left, 1 here"
    assert presence.statistics().joined == 2
    assert presence.statistics().left == 1


async def _serve(app: StrandsApp, broker: FakeBroker, *, task_status: Any) -> None:
    await app.serve(connect=broker.open_backend_stream, task_status=task_status)


async def test_a_client_moved_to_another_backend_is_healed_there() -> None:
    """A backend that gets a client whose new_connection went to another backend (which
    left) records it at its first message, and its disconnect removes it."""
    first, second = Presence(), Presence()
    with trio.fail_after(5):
        async with open_fake_broker() as broker, trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def first_backend(task_status: Any) -> None:
                with scope:
                    await _serve(_chat(first), broker, task_status=task_status)

            await nursery.start(first_backend)
            ann = await broker.connect(headers={"X-User": "ann"})
            assert await ann.receive() == "here: ann"
            await nursery.start(partial(_serve, _chat(second), broker))
            await broker.wait_backends(2)
            scope.cancel()
            await broker.wait_backends(1)

            await ann.send("who?")  # the broker moves ann to the second backend
            assert await ann.receive() == "here: ann"
            assert second.statistics().healed == 1
            await ann.close()
            bob = await broker.connect(headers={"X-User": "bob"})
            assert await bob.receive() == "here: bob"
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- in Redis


@attrs.define
class Instance:
    """One backend instance: its Redis connection, store, middleware and a harness to feed
    it events; ``scope.cancel()`` stops it, as a crash would (nothing is cleaned up)."""

    live: LiveRedis
    store: RedisPresence
    presence: Presence
    harness: MiddlewareHarness
    scope: trio.CancelScope


async def start_instance(
    nursery: trio.Nursery,
    url: str,
    instance_id: str,
    *,
    ttl: float = 5.0,
    fields: Mapping[str, Any] | None = None,
) -> Instance:
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[tuple[LiveRedis, RedisPresence]]) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                live = await inner.start(partial(serve_live_redis, url, backoff=QUICK))
                store = RedisPresence(live, instance_id=instance_id, ttl=ttl)
                await inner.start(store.serve)
                task_status.started((live, store))

    live, store = await nursery.start(run)
    presence = Presence(store=store, fields=fields or {})
    return Instance(live, store, presence, MiddlewareHarness([presence]), scope)


async def sleep_until_expired(live: LiveRedis, key: str) -> float:
    """Sleep until *key* has expired, by its own deadline: its PTTL counted from when the
    reply came (Redis computed it before), plus 2 ms for Redis's rounding to milliseconds.
    Returns the PTTL in seconds."""
    pttl = await live.execute("PTTL", key)
    assert pttl > 0, f"{key} has no expiry to wait for: PTTL {pttl}"
    await trio.sleep(pttl / 1000 + 0.002)
    assert await live.execute("PTTL", key) == -2  # gone
    return float(pttl) / 1000


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_two_instances_see_each_others_members(redis_url: str, nursery: trio.Nursery) -> None:
    """Members recorded by one instance are seen by another; each instance sees its own at
    once, before they are written."""
    with trio.fail_after(10):
        a = await start_instance(nursery, redis_url, "a", fields={"name": by_metadata("name")})
        b = await start_instance(nursery, redis_url, "b")
        await a.harness.new_connection("ann", room_id="lobby", metadata={"name": "Ann"})
        assert names(a.store.local_members("lobby")) == [("ann", "a")]
        assert names(await a.presence.members("lobby")) == [("ann", "a")]  # read your writes
        await b.harness.new_connection("bob", room_id="lobby")
        await b.harness.new_connection("cy", room_id="attic")
        await a.store.wait_synced()
        await b.store.wait_synced()
        for instance in (a, b):
            members = await instance.presence.members("lobby")
            assert names(members) == [("ann", "a"), ("bob", "b")]
            assert members[0].fields == {"name": "Ann"}
            assert await instance.presence.count("attic") == 1
            assert await instance.presence.rooms() == {"lobby": 2, "attic": 1}
        assert a.store.statistics().written == 1
        assert b.store.statistics().members == 2


async def test_a_disconnect_at_another_instance_removes_the_member(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """As with the reference broker, which picks a backend per event: a disconnect at
    another instance removes the member everywhere, and its owner forgets it (it will not
    write it back)."""
    with trio.fail_after(10):
        a = await start_instance(nursery, redis_url, "a")
        b = await start_instance(nursery, redis_url, "b")
        await a.harness.new_connection("ann", room_id="lobby")
        await a.store.wait_synced()
        await b.harness.disconnect("ann", room_id="lobby")
        assert await b.presence.members("lobby") == []  # at once, before it is written
        await b.store.wait_synced()
        assert await a.presence.members("lobby") == []
        assert a.store.statistics().members == 1  # until a reads its removal notices
        await a.store.wait_synced()
        assert a.store.statistics().members == 0
        assert await a.live.execute("KEYS", "strands:presence:room:*") == []


async def test_a_join_written_after_the_clients_leave_is_refused(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A new_connection recorded at one instance and written after another instance wrote
    the client's disconnect does not bring the client back; a later reconnection does."""
    with trio.fail_after(10):
        live = await nursery.start(partial(serve_live_redis, redis_url, backoff=QUICK))
        a = RedisPresence(live, instance_id="a")
        a.join("ann", "lobby", {})  # recorded, not written: a's task is not running yet
        b = await start_instance(nursery, redis_url, "b")
        await b.harness.disconnect("ann", room_id="lobby")  # later, at another instance
        await b.store.wait_synced()

        await nursery.start(a.serve)
        await a.wait_synced()
        statistics = a.statistics()
        assert (statistics.superseded, statistics.members) == (1, 0)
        assert await b.presence.members("lobby") == []

        a.join("ann", "lobby", {})  # ann reconnects, after her leave
        await a.wait_synced()
        assert names(await b.presence.members("lobby")) == [("ann", "a")]


async def test_a_dead_instances_members_expire_within_ttl(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """An instance that stops refreshing (a crash: nothing cleaned up) loses its members
    once its liveness key expires, at most ttl after its last refresh; a live instance then
    reaps their entries."""
    ttl = 0.5
    with trio.fail_after(10):
        a = await start_instance(nursery, redis_url, "a", ttl=ttl)
        b = await start_instance(nursery, redis_url, "b", ttl=ttl)
        await a.harness.new_connection("ann", room_id="lobby")
        await b.harness.new_connection("bob", room_id="lobby")
        await a.store.wait_synced()
        await b.store.wait_synced()
        b.scope.cancel()
        assert names(await a.presence.members("lobby")) == [("ann", "a"), ("bob", "b")]

    with trio.fail_after(ttl + 1):  # the bound, and a margin for the machine
        assert await sleep_until_expired(a.live, b.store.liveness_key) <= ttl
        assert names(await a.presence.members("lobby")) == [("ann", "a")]

    with trio.fail_after(5):
        await a.store.wait_synced()
        assert a.store.statistics().reaped == 1
        assert await a.live.execute("HKEYS", "strands:presence:room:lobby") == [b"ann"]
        assert await a.live.execute("SMEMBERS", "strands:presence:instances") == [b"a"]


async def test_a_client_of_a_dead_instance_is_healed_by_the_next(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A message from a client whose owner is still alive leaves the entry to it; once the
    owner has expired, the next message makes the receiving instance the owner."""
    ttl = 0.5
    with trio.fail_after(10):
        a = await start_instance(nursery, redis_url, "a", ttl=ttl)
        b = await start_instance(nursery, redis_url, "b", ttl=ttl)
        await b.harness.new_connection("bob", room_id="lobby")
        await b.store.wait_synced()
        b.scope.cancel()
        await a.harness.message("hi", client_id="bob", room_id="lobby")
        await a.store.wait_synced()
        assert names(await a.presence.members("lobby")) == [("bob", "b")]  # b's, for now
        assert a.store.knows("bob", "lobby")
        await a.harness.message("hi", client_id="bob", room_id="lobby")
        assert a.presence.statistics().healed == 1  # trusted: not asked again

    with trio.fail_after(ttl + 1):
        await sleep_until_expired(a.live, b.store.liveness_key)
        assert await a.presence.members("lobby") == []
        assert not a.store.knows("bob", "lobby")
        await a.harness.message("still here", client_id="bob", room_id="lobby")
        await a.store.wait_synced()
        assert names(await a.presence.members("lobby")) == [("bob", "a")]
        assert a.presence.statistics().healed == 2


async def test_events_pass_while_redis_is_down_and_presence_heals_after(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    """Redis killed: events still reach the handler, changes are counted and kept, queries
    raise PresenceUnavailable, one warning. Redis back, empty: the instance writes its
    members again, and another instance sees them all."""
    caplog.set_level(logging.INFO, logger="strands_trio.middleware.presence")
    with trio.fail_after(20):
        a = await start_instance(nursery, redis_server.url, "a")
        b = await start_instance(nursery, redis_server.url, "b")
        await a.harness.new_connection("ann", room_id="lobby")
        await a.harness.new_connection("gus", room_id="lobby")
        await a.store.wait_synced()

        await trio.to_thread.run_sync(redis_server.kill)
        await a.live.wait_lost()
        outcomes = [
            await a.harness.new_connection("bob", room_id="lobby"),
            await a.harness.message("hi", client_id="ann", room_id="lobby"),
            await a.harness.disconnect("gus", room_id="lobby"),
            await a.harness.new_connection("cy", room_id="lobby"),
        ]
        assert all(outcome.reached for outcome in outcomes)
        with pytest.raises(PresenceUnavailable, match="cannot ask Redis"):
            await a.presence.members("lobby")
        assert [m.client_id for m in a.store.local_members("lobby")] == ["ann", "bob", "cy"]
        statistics = a.store.statistics()
        assert statistics.deferred == 3
        assert statistics.query_failures == 1

        await trio.to_thread.run_sync(redis_server.start)
        await a.store.wait_synced()
        await b.store.wait_synced()  # b connected again too
        members = await b.presence.members("lobby")
        assert [m.client_id for m in members] == ["ann", "bob", "cy"]
        statistics = a.store.statistics()
        assert (statistics.outages, statistics.lapses, statistics.pending) == (1, 1, 0)
        assert statistics.republished == 3

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if w.startswith("presence a: Redis is unavailable")]) == 1
    assert len([w for w in warnings if w.startswith("presence a: this instance's liveness")]) == 1
    assert any(r.getMessage().startswith("presence a: Redis is back") for r in caplog.records)


async def test_recording_without_serve_warns_once_and_queries_still_work(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store whose task is not running keeps changes in memory and says so once; a
    process that only reads needs no task."""
    with trio.fail_after(5):
        async with open_live_redis(redis_url, backoff=QUICK) as live:
            await live.wait_available()
            store = RedisPresence(live, instance_id="reader")
            store.join("ann", "lobby", {})
            store.join("bob", "lobby", {})
            assert [r.getMessage() for r in caplog.records] == [
                "presence reader: RedisPresence.serve() is not running: changes are kept in memory "
                "and not written to Redis; start it with nursery.start(store.serve)"
            ]
            assert store.statistics().pending == 2
            assert [m.client_id for m in await store.members("lobby")] == ["ann", "bob"]
            assert await store.rooms() == {}  # written ones only
            with pytest.raises(RuntimeError, match="not serving"):
                await store.wait_synced()


async def test_entries_that_are_not_members_are_skipped(redis_url: str) -> None:
    """Entries without a live owner are filtered in Redis; one with a live owner but broken
    fields is skipped and counted."""
    with trio.fail_after(5):
        async with open_live_redis(redis_url, backoff=QUICK) as live:
            await live.wait_available()
            store = RedisPresence(live, instance_id="a")
            await live.execute("SET", store.liveness_key, "1")
            key = "strands:presence:room:lobby"
            await live.execute("HSET", key, "x", "not json", "y", '{"instance": "a"}')
            await live.execute("SADD", "strands:presence:rooms", "lobby")
            assert await store.members("lobby") == []
            assert store.statistics().invalid == 1
            assert await store.rooms() == {"lobby": 1}  # counted in Redis, by owner


async def test_redis_store_configuration_is_checked(redis_url: str) -> None:
    """Bad arguments are refused when the store is made."""
    async with open_live_redis(redis_url, backoff=QUICK) as live:
        with pytest.raises(TypeError, match="LiveRedis"):
            RedisPresence(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="prefix"):
            RedisPresence(live, prefix="")
        with pytest.raises(ValueError, match="ttl"):
            RedisPresence(live, ttl=0)
        with pytest.raises(TypeError, match="ttl"):
            RedisPresence(live, ttl="30")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="batch"):
            RedisPresence(live, batch=0)
        store = RedisPresence(live, instance_id="a", prefix="p:")
        assert store.liveness_key == "p:alive:a"
        assert "ttl=30" in repr(store)


async def test_a_republish_is_written_in_batches(redis_url: str, nursery: trio.Nursery) -> None:
    """Many changes are written a batch at a time."""
    with trio.fail_after(10):
        live = await nursery.start(partial(serve_live_redis, redis_url, backoff=QUICK))
        store = RedisPresence(live, instance_id="a", batch=3)
        await nursery.start(store.serve)
        for n in range(10):
            store.join(f"c{n}", "lobby", {})
        await store.wait_synced()
        assert await store.count("lobby") == 10
        assert store.statistics().written == 10
        with pytest.raises(RuntimeError, match="already serving"):
            await store.serve()
