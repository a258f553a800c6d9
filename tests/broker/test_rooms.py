"""Many rooms in the hub: join_room and leave_room, each member once, leaving on disconnect,
the disconnected event's rooms, the figures, bad actions, and reference mode."""

from __future__ import annotations

import trio
import trio.testing

from strands_trio.broker import Hub

from .test_hub import Link, accept, admit_via, attach, config, make, server_of


async def test_a_client_in_several_rooms_gets_each_message_once(nursery: trio.Nursery) -> None:
    hub = make()
    backend, _ = await attach(hub, nursery)
    ann, bob = Link(), Link()
    hub.connect(await admit_via(hub, backend, accept("ann", "home")), ann)
    hub.connect(await admit_via(hub, backend, accept("bob", "other")), bob)
    await backend.send("join_room", conn_id="ann", room_id="other")
    await backend.send("join_room", conn_id="ann", room_id="other")  # again: nothing more
    await backend.send("join_room", conn_id="ann", room_id="home")  # its own: nothing
    await backend.send("join_room", conn_id="ann", room_id="third")
    await backend.send("message_to_room", room_id="other", message="to other")
    await backend.send("message_to_room", room_id="third", message="to third")
    await backend.send("message_to_room", room_id="home", message="to home")
    await trio.testing.wait_all_tasks_blocked()
    assert ann.received == ["to other", "to third", "to home"]
    assert bob.received == ["to other"]
    stats = hub.statistics()
    assert (stats.memberships, stats.rooms, stats.room_joins, stats.room_noops) == (4, 3, 2, 2)
    metrics = {name for name, *_ in hub.metrics()}
    assert {"room_memberships", "room_joins_total", "room_leaves_total"} <= metrics

    await backend.send("leave_room", conn_id="ann", room_id="other")
    await backend.send("leave_room", conn_id="ann", room_id="home")  # connect-time: ignored
    await backend.send("leave_room", conn_id="ann", room_id="never")  # not in it: ignored
    await backend.send("message_to_room", room_id="other", message="after leave")
    await backend.send("message_to_room", room_id="home", message="still home")
    await trio.testing.wait_all_tasks_blocked()
    assert ann.received[3:] == ["still home"]
    assert bob.received[1:] == ["after leave"]
    stats = hub.statistics()
    assert (stats.memberships, stats.room_leaves, stats.room_noops) == (3, 1, 4)


async def test_disconnect_leaves_every_room_and_lists_them(nursery: trio.Nursery) -> None:
    hub = make()
    backend, _ = await attach(hub, nursery)
    ann, bob = Link(), Link()
    client = hub.connect(await admit_via(hub, backend, accept("ann", "home")), ann)
    hub.connect(await admit_via(hub, backend, accept("bob", "b")), bob)
    for room in ("r1", "r2", "b"):
        await backend.send("join_room", conn_id="ann", room_id=room)
    await trio.testing.wait_all_tasks_blocked()
    assert hub.statistics().rooms == 4
    hub.disconnect(client)
    event = await backend.next("disconnected")
    assert event["params"]["context"]["room_id"] == "home"
    assert event["params"]["rooms"] == ["home", "r1", "r2", "b"]
    stats = hub.statistics()
    assert (stats.memberships, stats.rooms, stats.connections) == (1, 1, 1)  # bob in b
    # A join racing the disconnect arrives after it: counted, and no ghost membership.
    await backend.send("join_room", conn_id="ann", room_id="r1")
    await backend.send("message_to_room", room_id="b", message="to b")
    await trio.testing.wait_all_tasks_blocked()
    stats = hub.statistics()
    assert (stats.memberships, stats.rooms, stats.unknown_targets) == (1, 1, 1)
    assert ann.received == []
    assert bob.received == ["to b"]


async def test_a_replaced_client_leaves_its_joined_rooms(nursery: trio.Nursery) -> None:
    hub = make()
    backend, _ = await attach(hub, nursery)
    old, new = Link(), Link()
    hub.connect(await admit_via(hub, backend, accept("ann", "home")), old)
    await backend.send("join_room", conn_id="ann", room_id="extra")
    await trio.testing.wait_all_tasks_blocked()
    hub.connect(await admit_via(hub, backend, accept("ann", "home")), new)
    await backend.send("message_to_room", room_id="extra", message="x")
    await trio.testing.wait_all_tasks_blocked()
    assert (old.received, new.received) == ([], [])
    assert hub.statistics().memberships == 1


async def test_bad_room_actions_are_skipped(nursery: trio.Nursery) -> None:
    hub = make()
    backend, _ = await attach(hub, nursery)
    ann = Link()
    hub.connect(await admit_via(hub, backend, accept("ann", "home")), ann)
    await backend.send("join_room", conn_id="ann")  # no room_id
    await backend.send("join_room", conn_id=5, room_id="x")
    await backend.send("leave_room", room_id="x")
    await backend.send("join_room", conn_id="ann", room_id="ok")
    await backend.send("message_to_room", room_id="ok", message="still up")
    await trio.testing.wait_all_tasks_blocked()
    assert ann.received == ["still up"]
    assert server_of(hub).statistics().bad_frames == 3


async def test_reference_mode_ignores_room_actions(nursery: trio.Nursery) -> None:
    from strands_trio.broker._backends import BackendServer

    from . import test_hub

    hub = Hub(config(), reference=True)
    test_hub.SERVERS[hub] = BackendServer(hub, hub.config)
    backend, _ = await attach(hub, nursery)
    ann = Link()
    client = hub.connect(await admit_via(hub, backend, accept("ann", "home")), ann)
    await backend.send("join_room", conn_id="ann", room_id="other")
    await backend.send("message_to_room", room_id="other", message="x")
    await trio.testing.wait_all_tasks_blocked()
    assert ann.received == []
    assert hub.statistics().memberships == 1
    hub.disconnect(client)
    event = await backend.next("disconnected")
    assert "rooms" not in event["params"]
