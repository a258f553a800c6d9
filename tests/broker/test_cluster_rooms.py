"""Many rooms across the nodes of a broker cluster, on a real redis-server: a backend on one
node makes a client of another join and leave rooms; room messages reach each member once;
presence lists joined members; a disconnection leaves every room."""

from __future__ import annotations

import trio

from strands_trio.protocol import BrokerMember

from .test_cluster import DEADLINE, Node, exactly, node_config, settle, start_node

pytest_plugins = ["tests._redis"]


async def presence_is(node: Node, room: str, expected: list[BrokerMember]) -> None:
    """Return once *node*'s presence of *room* is *expected* (the joins travel through
    Redis in their own time, and the other node announces nothing: poll)."""
    while sorted(await node.app.presence(room), key=str) != expected:  # noqa: ASYNC110
        await trio.sleep(0.01)


async def test_joined_rooms_across_nodes(redis_url: str, nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"))
        ann = await a.client(nursery, "ann", "lobby")
        dan = await a.client(nursery, "dan", "rare")
        bob = await b.client(nursery, "bob", "other")
        cat = await b.client(nursery, "cat", "lobby")
        await settle(a, b)

        # A backend on node a makes bob, on node b, join lobby (which b has a member of)
        # and rare (which it has none of: b must subscribe to its channel).
        await a.app.join_room("bob", "lobby")
        await a.app.join_room("bob", "rare")
        await a.app.join_room("bob", "rare")  # again: nothing more
        ann_a, bob_b, cat_b, dan_a = (
            BrokerMember(client_id=c, node=n) for c, n in (("ann", "a"), ("bob", "b"),
                                                           ("cat", "b"), ("dan", "a"))
        )  # fmt: skip
        await presence_is(a, "lobby", [ann_a, bob_b, cat_b])
        await presence_is(a, "rare", [bob_b, dan_a])
        await settle(a, b)
        await a.app.send_room_message("lobby", "to lobby")
        await a.app.send_room_message("rare", "to rare")
        await b.app.send_room_message("other", "to other")
        got = sorted([await bob.get_message() for _ in range(3)])  # two backends: any order
        assert got == ["to lobby", "to other", "to rare"]
        await a.app.broadcast_message("first marker")
        await exactly(bob, "first marker")  # each once: nothing else came before it
        await exactly(ann, "to lobby", "first marker")
        await exactly(cat, "to lobby", "first marker")
        await exactly(dan, "to rare", "first marker")
        b_stats = b.address.hub.statistics()
        assert (b_stats.memberships, b_stats.room_joins, b_stats.room_noops) == (4, 2, 1)

        # Bob leaves rare (through node b's own backend): b unsubscribes; only dan gets it.
        await b.app.leave_room("bob", "rare")
        await presence_is(a, "rare", [dan_a])
        await settle(a, b)
        await a.app.send_room_message("rare", "rare again")
        await a.app.broadcast_message("marker")
        await exactly(dan, "rare again", "marker")
        await exactly(bob, "marker")  # not "rare again"

        # Bob disconnects: out of lobby (joined) and other (his own) everywhere.
        await bob.aclose()
        await b.left["bob"].wait()
        await presence_is(a, "lobby", [ann_a, cat_b])
        await presence_is(a, "other", [])
        assert b.address.hub.statistics().memberships == 1  # cat

        # A join for a client no node has is counted, and makes no membership.
        await a.app.join_room("bob", "lobby")
        await a.app.presence("lobby")  # a round trip behind it: its lookup is done
        assert a.stats.unknown_targets == 1
        await presence_is(a, "lobby", [ann_a, cat_b])


async def test_a_resync_registers_joined_rooms_again(redis_url: str, nursery: trio.Nursery) -> None:
    """After the node's registrations are cleared (Redis lost them), its keeper registers
    the joined rooms again along with the clients."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        await a.client(nursery, "ann", "lobby")
        await a.app.join_room("ann", "extra")
        await presence_is(a, "extra", [BrokerMember(client_id="ann", node="a")])
        await a.redis.execute("FLUSHDB")  # Redis restarted empty, as far as a can tell
        await presence_is(a, "extra", [])
        await a.cluster.renew()  # the keeper finds its alive key gone: registers again
        await settle(a)
        await presence_is(a, "extra", [BrokerMember(client_id="ann", node="a")])
        await presence_is(a, "lobby", [BrokerMember(client_id="ann", node="a")])
