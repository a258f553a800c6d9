"""join_room and leave_room from the backend's side, through FakeBroker: delivery once, the
presence middleware following the joins, and the refusal on the reference broker."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from strands_trio import ConnectionRequestContext, Context, RoomsUnsupported, StrandsApp
from strands_trio.middleware import MemoryPresence, Presence
from strands_trio.testing import open_fake_broker


def rooms_app(presence: Presence) -> StrandsApp:
    """Clients connect to /ws/<room>; "join:<room>" and "leave:<room>" move them, "say:<room>:
    <text>" sends to a room, "who:<room>" answers with the presence of a room."""
    app = StrandsApp(middleware=[presence])

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> None:
        request.context.room_id = request.path.removeprefix("/ws/")
        request.context.client_id = request.header("x-id") or "?"

    @app.on_message
    async def said(message: str, context: Context) -> None:
        verb, _, rest = message.partition(":")
        if verb == "join":
            await app.join_room(context.client_id, rest)
        elif verb == "leave":
            await app.leave_room(context.client_id, rest)
        elif verb == "say":
            room, _, text = rest.partition(":")
            await app.send_room_message(room, text)
        elif verb == "who":
            members = await presence.members(rest)
            ids = ",".join(m.client_id for m in members)
            await app.send_private_message(context.client_id, f"{rest}={ids}")

    return app


async def test_join_and_leave_through_our_broker_and_presence() -> None:
    presence = Presence(store=MemoryPresence(instance_id="here"))
    app = rooms_app(presence)
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=False) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann = await broker.connect("/ws/home", headers={"X-Id": "ann"})
            bob = await broker.connect("/ws/games", headers={"X-Id": "bob"})
            await ann.send("join:games")
            await ann.send("join:games")  # twice: still once
            await ann.send("who:games")
            assert await ann.receive() == "games=bob,ann"
            await bob.send("say:games:hi")
            assert await ann.receive() == "hi"
            assert await bob.receive() == "hi"
            await ann.send("leave:games")
            await ann.send("who:games")
            assert await ann.receive() == "games=bob"
            await bob.send("say:games:after")
            assert await bob.receive() == "after"
            await ann.send("say:home:home")  # ann's next message is home's, not "after"
            assert await ann.receive() == "home"
            await ann.send("join:games")
            await ann.send("join:extra")
            await ann.send("who:extra")
            assert await ann.receive() == "extra=ann"
            await ann.close()
            await bob.send("who:games")
            assert await bob.receive() == "games=bob"
            await bob.send("who:extra")
            assert await bob.receive() == "extra="
    stats = presence.statistics()
    assert (stats.rooms_joined, stats.rooms_left, stats.store_errors) == (4, 1, 0)


async def test_the_reference_broker_refuses_with_a_clear_error() -> None:
    app = StrandsApp()
    errors: list[BaseException] = []

    @app.on_new_connection
    async def joined(context: Context) -> None:
        try:
            await app.join_room(context.client_id, "second")
        except RoomsUnsupported as exc:
            errors.append(exc)
        await app.send_private_message(context.client_id, "done")

    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=True) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ws = await broker.connect("/ws/home")
            assert await ws.receive() == "done"
    assert len(errors) == 1
    assert "join_room needs strands-trio's broker" in str(errors[0])
    assert "one room per client, fixed at connect" in str(errors[0])


async def test_arguments_are_checked_and_serving_is_required() -> None:
    app = StrandsApp()
    with pytest.raises(Exception, match="not serving"):
        await app.join_room("ann", "r")
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=False) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            with pytest.raises(TypeError, match="room_id must be a str"):
                await app.join_room("ann", 5)  # type: ignore[arg-type]
            await app.leave_room("nobody", "r")  # unknown: the broker counts it
            await trio.testing.wait_all_tasks_blocked()
            assert broker.hub.statistics().unknown_targets == 1


async def test_memory_store_with_several_rooms() -> None:
    store = MemoryPresence(instance_id="i")
    store.join("ann", "home", {"name": "Ann"})
    store.join_room("ann", "a")
    store.join_room("ann", "b")
    store.join_room("ann", "home")  # its own: nothing
    store.join("bob", "a", {})
    assert store.rooms_nowait() == {"home": 1, "a": 2, "b": 1}
    (member,) = store.members_nowait("b")
    assert (member.client_id, member.room, member.fields) == ("ann", "b", {"name": "Ann"})
    store.leave_room("ann", "a")
    store.leave_room("ann", "home")  # not a joined room: nothing
    assert store.rooms_nowait() == {"home": 1, "a": 1, "b": 1}
    assert store.statistics().memberships == 3
    store.leave("ann", "home")  # disconnected: out of every room
    assert store.rooms_nowait() == {"a": 1}
    store.join_room("cy", "x")  # a client known only from a join: its leave still removes it
    store.leave("cy", "y")
    assert store.rooms_nowait() == {"a": 1}
