"""The broker cluster on a real redis-server: nodes on loopback, backends and WebSocket clients
on different nodes, presence across nodes, a node that dies, Redis restarting; and the presence
extension on a single broker."""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from strands_trio import (
    ClientConfig,
    ConnectionRequestContext,
    Context,
    StrandsApp,
    StrandsClient,
)
from strands_trio._errors import NotConnectedError, PresenceIncomplete
from strands_trio.broker import BrokerAddress, BrokerConfig, ClusterStatistics, serve_broker
from strands_trio.broker._cli import config_from_args
from strands_trio.broker.cluster import ClusterNode
from strands_trio.protocol import (
    BrokerMember,
    FrameDecoder,
    PresenceReply,
    PresenceRequest,
    Role,
    encode,
)
from strands_trio.redis import LivePubSub, LiveRedis, RedisError
from strands_trio.testing import open_fake_broker

from .._net import http_get, open_client, reap

if TYPE_CHECKING:
    from .._redis import RedisServer

pytest_plugins = ["tests._redis"]

DEADLINE = 15
PREFIX = "test:"


def node_config(redis_url: str, node_id: str, **overrides: Any) -> BrokerConfig:
    """A cluster node on free loopback ports, without heartbeats."""
    values: dict[str, Any] = {
        "ws_host": "127.0.0.1",
        "ws_port": 0,
        "tcp_port": 0,
        "heartbeat_interval": None,
        "redis_url": redis_url,
        "node_id": node_id,
        "cluster_prefix": PREFIX,
        "node_ttl": 2.0,
        "shutdown_timeout": 2.0,
    }
    values.update(overrides)
    return BrokerConfig(**values)


def backend(left: dict[str, trio.Event] | None = None) -> StrandsApp:
    """Admits everyone: the client id from ``X-Id``, the room from the path; greets each new
    client privately (so that a test knows the node has registered it); sets
    ``left[client_id]`` when a client leaves."""
    app = StrandsApp()
    gone = collections.defaultdict(trio.Event) if left is None else left

    @app.on_disconnect
    async def leave(context: Context) -> None:
        gone[context.client_id].set()

    @app.on_message
    async def said(message: str, context: Context) -> None:
        await app.send_room_message(context.room_id, f"{context.client_id}: {message}")

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.client_id = request.header("x-id") or "?"
        request.context.room_id = request.url.removeprefix("/ws/")
        return True

    @app.on_new_connection
    async def welcome(context: Context) -> None:
        await app.send_private_message(context.client_id, "welcome")

    return app


class Node:
    """A broker node started in its own cancel scope (to stop it, or crash it), with a
    backend connected to it."""

    def __init__(self, address: BrokerAddress, scope: trio.CancelScope) -> None:
        self.address = address
        self.scope = scope
        #: Set when a client of this node has left (its backend got ``disconnected``).
        self.left: dict[str, trio.Event] = collections.defaultdict(trio.Event)
        self.app = backend(self.left)
        #: Set when the node has stopped.
        self.stopped = trio.Event()

    @property
    def cluster(self) -> ClusterNode:
        """The node's cluster side, which ``serve_broker`` composed with its hub."""
        cluster = self.address.cluster
        assert cluster is not None
        return cluster

    @property
    def stats(self) -> ClusterStatistics:
        """The node's cluster figures, as ``BrokerAddress.statistics()`` reports them."""
        stats = self.address.statistics().cluster
        assert stats is not None
        return stats

    @property
    def redis(self) -> LiveRedis:
        assert self.cluster.redis is not None
        return self.cluster.redis

    @property
    def pubsub(self) -> LivePubSub:
        assert self.cluster.pubsub is not None
        return self.cluster.pubsub

    async def client(self, nursery: trio.Nursery, client_id: str, room: str) -> WebSocketConnection:
        """A WebSocket client of this node, once its backend has greeted it."""
        ws = await open_client(nursery, self.address.ws_port, f"/ws/{room}", [("X-Id", client_id)])
        assert await ws.get_message() == "welcome"
        return ws

    def crash(self) -> None:
        """Stop at once without deregistering, as a crashed process would."""
        self.cluster._crash()
        self.scope.cancel()


async def start_node(
    nursery: trio.Nursery, config: BrokerConfig, *, with_backend: bool = True
) -> Node:
    """A node and its backend (unless not *with_backend*), in a cancel scope of their own."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[Node]) -> None:
        node: Node | None = None
        try:
            with scope:
                async with trio.open_nursery() as inner:
                    address: BrokerAddress = await inner.start(serve_broker, config)
                    node = Node(address, scope)
                    if with_backend:
                        await inner.start(partial(node.app.serve, "127.0.0.1", address.tcp_port))
                    task_status.started(node)
        finally:
            if node is not None:
                node.stopped.set()

    node: Node = await nursery.start(run)
    return node


async def learns_backends_of(node: Node, other: str) -> None:
    """Return once *node* knows that node *other* has backends (it learns at a renewal, which
    this runs rather than waiting for)."""
    while other not in node.cluster.backend_nodes:
        await node.cluster.renew()


async def settle(*nodes: Node) -> None:
    for node in nodes:
        await node.cluster.settle()


async def subscribed(server: RedisServer, channel: str, count: int) -> None:
    """Return once Redis counts *count* subscribers to *channel*: for a node in another
    process, whose ``settle()`` a test cannot call (it subscribes to a room's channel after
    its first member joined, in its own time)."""
    for _ in range(1000):
        if server.command("PUBSUB", "NUMSUB", channel)[1] >= count:
            return
        await trio.sleep(0.01)
    raise AssertionError(f"{channel} never had {count} subscribers")


async def exactly(ws: WebSocketConnection, *expected: str) -> None:
    """*ws* receives *expected*, in order."""
    for text in expected:
        assert await ws.get_message() == text


# ---------------------------------------------------------------------- delivery across nodes


async def test_room_private_broadcast_and_close_cross_nodes(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A backend on node A reaches clients on node B by room, private message, broadcast and
    close; each client gets each message once; a room without members on a node sends it
    nothing."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"))
        c = await start_node(nursery, node_config(redis_url, "c"))
        ann = await a.client(nursery, "ann", "lobby")
        bob = await b.client(nursery, "bob", "lobby")
        cat = await b.client(nursery, "cat", "other")
        dan = await c.client(nursery, "dan", "elsewhere")
        await settle(a, b, c)

        await a.app.send_room_message("lobby", "hello lobby")
        await a.app.send_private_message("bob", "psst bob")
        await a.app.broadcast_message("to all")
        await exactly(ann, "hello lobby", "to all")
        await exactly(bob, "hello lobby", "psst bob", "to all")
        await exactly(cat, "to all")
        await exactly(dan, "to all")
        # Each got each message once: the next thing each receives is this second broadcast.
        await b.app.broadcast_message("marker")
        for ws in (ann, bob, cat, dan):
            assert await ws.get_message() == "marker"

        # Node C has no client in lobby, so it received none of its messages.
        assert c.stats.received == 2  # the two broadcasts
        assert a.stats.published == 3
        status, body = await http_get(a.address.ws_port, "/metrics")
        assert status == 200
        assert b"strands_broker_cluster_published_total 3\n" in body
        assert b"strands_broker_cluster_redis_up 1\n" in body
        status, body = await http_get(a.address.ws_port, "/healthz")
        assert json.loads(body)["node"] == "a"
        assert json.loads(body)["redis"] is True

        await c.app.close_connection("cat", 4001, "kicked")
        with pytest.raises(ConnectionClosed) as closed:
            await cat.get_message()
        assert closed.value.reason.code == 4001
        assert closed.value.reason.reason == "kicked"

        await a.app.send_private_message("nobody", "lost")
        await a.app.presence("lobby")  # a round trip behind it: its lookup is done
        assert a.stats.unknown_targets == 1


async def test_same_client_id_on_another_node_replaces_the_first(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A client id connecting on node B closes the socket with the same id on node A
    (1008), as one node does: messages to an id reach one socket in the whole cluster."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"))
        first = await a.client(nursery, "x", "lobby")
        await settle(a, b)
        await b.client(nursery, "x", "lobby")
        with pytest.raises(ConnectionClosed) as closed:
            await first.get_message()
        assert closed.value.reason.code == 1008
        await settle(a, b)
        assert await a.app.presence("lobby") == [BrokerMember(client_id="x", node="b")]


async def test_a_node_without_backend_uses_another_nodes_backends(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A node with no backend forwards its clients' connection requests and events to a node
    that has one, and the backend's actions reach those clients as usual."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"), with_backend=False)
        await learns_backends_of(b, "a")
        ann = await a.client(nursery, "ann", "lobby")
        bob = await b.client(nursery, "bob", "lobby")  # admitted by a's backend, greeted
        await settle(a, b)
        await bob.send_message("hi")  # a new_message event, forwarded to a's backend
        await exactly(bob, "bob: hi")
        await exactly(ann, "bob: hi")
        await bob.aclose()
        await a.left["bob"].wait()  # the disconnected event reached a's backend too
        assert b.address.statistics().hub.backends == 0
        assert a.stats.received >= 4
        # Its connection request, new_connection, new_message and disconnected events.
        assert b.stats.forwarded_events == 4


async def test_a_stopped_node_does_not_stall_the_others(
    redis_url: str, redis_session_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Node B, in a process of its own, is frozen (SIGSTOP): node A's clients keep getting
    their room's messages at once and A loses nothing; thawed, B delivers what Redis kept for
    it, in order."""
    a = await start_node(nursery, node_config(redis_url, "a"))
    command = [sys.executable, "-m", "strands_trio", "broker", "--redis", redis_url]
    command += ["--node-id", "b", "--cluster-prefix", PREFIX, "--ws-host", "127.0.0.1"]
    command += ["--ws-port", "0", "--tcp-port", "0", "--log-level", "WARNING"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(DEADLINE):
            assert process.stdout is not None
            banner = b""
            while not banner.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "node b exited before listening"
                banner += chunk
            ports = re.search(rb"127\.0\.0\.1:(\d+)/ws/\.\.\., backends on \S+:(\d+)", banner)
            assert ports, banner
            ws_port, tcp_port = int(ports[1]), int(ports[2])
            b_app = backend()
            await nursery.start(partial(b_app.serve, "127.0.0.1", tcp_port))
            ann = await a.client(nursery, "ann", "lobby")
            bob = await open_client(nursery, ws_port, "/ws/lobby", [("X-Id", "bob")])
            assert await bob.get_message() == "welcome"
            await subscribed(redis_session_server, f"{PREFIX}room:lobby", 2)
            await a.app.send_room_message("lobby", "warm-up")
            await exactly(ann, "warm-up")
            await exactly(bob, "warm-up")

            process.send_signal(signal.SIGSTOP)
            sent = [f"m{n}" for n in range(200)]
            for text in sent:
                await a.app.send_room_message("lobby", text)
            await exactly(ann, *sent)
            await a.cluster.settle()
            assert a.stats.lost == 0

            process.send_signal(signal.SIGCONT)
            await exactly(bob, *sent)
    finally:
        process.send_signal(signal.SIGCONT)
        await reap(process)


async def test_pins_of_other_nodes_clients_are_forgotten_with_their_node() -> None:
    """A node taking another node's client events pins each client to a backend; when that
    node leaves the cluster (its disconnected events never come) the pins go too."""
    from strands_trio.broker.cluster._channels import Channels
    from strands_trio.broker.cluster._forwarding import Forwarding
    from strands_trio.broker.cluster._writer import Writer

    class Alive:
        name = "alive"
        full = False

        def __init__(self) -> None:
            self.alive = True
            self.sent: list[bytes] = []

        def send(self, data: bytes, owner: object = None) -> None:
            self.sent.append(data)

        async def wait_progress(self) -> None:
            await trio.lowlevel.checkpoint()

    backend = Alive()

    class StubHub:
        def pick_backend(self) -> Alive:
            return backend

        def enqueue(self, data: bytes) -> None:
            raise AssertionError("there is a backend")

        def complete_admission(self, response: object) -> bool:
            raise AssertionError("no response expected")

        def fail_admission(self, request_id: str) -> None:
            raise AssertionError("no refusal expected")

    config = BrokerConfig(redis_url="redis://127.0.0.1:1/0", node_id="m")
    forwarding = Forwarding(StubHub(), config, Channels(PREFIX, "m"), Writer("m", ()))
    for origin in ("n", "o"):
        for i in range(100):
            context = {"client_id": f"{origin}{i}", "room_id": "r"}
            forwarding.forwarded_event(
                origin, {"action": "new_connection", "params": {"context": context}}
            )
    assert len(backend.sent) == 200
    assert forwarding.statistics().pins == 200
    assert forwarding.wants_live_nodes()
    forwarding.live_nodes_are({"m", "o"})  # n is gone
    assert sorted(forwarding._pins) == sorted(f"o{i}" for i in range(100))
    backend.alive = False  # the backend they were pinned to left
    forwarding.live_nodes_are({"m", "o"})
    assert not forwarding.wants_live_nodes()


async def test_an_event_forwarded_to_a_dead_node_is_counted_lost(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """When the node that took a backend-less node's events dies, the next forwarded event
    finds nobody on its channel: it is counted lost, and that node is no longer used (a new
    client is refused at once instead of waiting for a backend that is not there)."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"), with_backend=False)
        await learns_backends_of(b, "a")
        bob = await b.client(nursery, "bob", "lobby")
        a.crash()
        await a.stopped.wait()
        await bob.send_message("anyone?")
        while b.stats.lost == 0:  # until b has read the message and Redis has answered
            await b.cluster.settle()
        assert "a" not in b.cluster.backend_nodes
        with pytest.raises(ConnectionRejected) as refused:
            await open_client(nursery, b.address.ws_port, "/ws/lobby", [("X-Id", "cat")])
        assert refused.value.status_code == 503


# ---------------------------------------------------------------------- presence


async def test_presence_lists_the_members_of_every_node(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """The presence extension answers with every member of a room and its node, across
    nodes, and follows clients that leave."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"))
        await a.client(nursery, "ann", "lobby")
        bob = await b.client(nursery, "bob", "lobby")
        await b.client(nursery, "cat", "other")
        await settle(a, b)
        expected = [
            BrokerMember(client_id="ann", node="a"),
            BrokerMember(client_id="bob", node="b"),
        ]
        assert sorted(await a.app.presence("lobby"), key=str) == expected
        assert sorted(await b.app.presence("lobby"), key=str) == expected
        assert await a.app.presence("other") == [BrokerMember(client_id="cat", node="b")]
        assert await a.app.presence("empty") == []
        await bob.aclose()
        await b.left["bob"].wait()
        await settle(b)
        assert await a.app.presence("lobby") == [BrokerMember(client_id="ann", node="a")]


async def test_a_dead_node_leaves_presence_within_its_ttl(
    redis_url: str, redis_session_server: RedisServer, nursery: trio.Nursery
) -> None:
    """A node that crashes (no deregistration) drops out of presence and of private-message
    lookups once its alive key expires, and the next sweep deletes its entries; a node
    that stops gracefully leaves at once."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_url, "a"))
        b = await start_node(nursery, node_config(redis_url, "b"))
        c = await start_node(nursery, node_config(redis_url, "c"))
        await a.client(nursery, "ann", "lobby")
        await b.client(nursery, "bob", "lobby")
        await c.client(nursery, "cid", "lobby")
        await settle(a, b, c)
        assert len(await a.app.presence("lobby")) == 3

        c.scope.cancel()  # graceful: deregistered at once
        await c.stopped.wait()
        assert redis_session_server.command("HGET", f"{PREFIX}clients", "cid") is None
        assert len(await a.app.presence("lobby")) == 2
        b.crash()
        assert redis_session_server.command("HGET", f"{PREFIX}clients", "bob") == b"b"
        # Wait out b's alive key exactly, as Redis counts it.
        pttl = redis_session_server.command("PTTL", f"{PREFIX}alive:b")
        assert 0 < pttl <= 2000
        await trio.sleep(pttl / 1000 + 0.01)
        assert await a.app.presence("lobby") == [BrokerMember(client_id="ann", node="a")]
        await a.app.send_private_message("bob", "lost")
        await a.app.presence("lobby")  # a round trip behind it: its lookup is done
        assert a.stats.unknown_targets == 1
        # The sweep (every node_ttl / 3) deletes what the dead node had registered.
        await a.cluster.renew()
        assert redis_session_server.command("EXISTS", f"{PREFIX}owned:b") == 0
        assert redis_session_server.command("HGET", f"{PREFIX}clients", "bob") is None
        assert redis_session_server.command("SMEMBERS", f"{PREFIX}nodes") == [b"a"]


async def test_redis_restart(redis_server: RedisServer, nursery: trio.Nursery) -> None:
    """Redis killed and started again (empty): nodes reconnect, subscribe again and
    register their clients again; what was published meanwhile is counted as lost; local
    delivery goes on throughout."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_server.url, "a"))
        b = await start_node(nursery, node_config(redis_server.url, "b"))
        ann = await a.client(nursery, "ann", "lobby")
        bob = await b.client(nursery, "bob", "lobby")
        await settle(a, b)

        redis_server.kill()
        await a.redis.wait_lost()
        await a.app.send_room_message("lobby", "during the outage")
        assert await ann.get_message() == "during the outage"  # local delivery goes on
        with pytest.raises(RedisError):
            await a.cluster.settle()
        assert a.stats.lost == 1

        redis_server.start()
        for node in (a, b):
            await node.redis.wait_available()
            await node.pubsub.wait_available()
        await settle(a, b)
        stats = b.stats
        assert stats.resyncs >= 2
        assert stats.redis_available
        assert stats.subscriber_available
        await a.app.send_room_message("lobby", "after")
        await exactly(ann, "after")
        await exactly(bob, "after")  # nothing from the outage, nothing twice
        members = sorted(await a.app.presence("lobby"), key=str)
        assert members == [
            BrokerMember(client_id="ann", node="a"),
            BrokerMember(client_id="bob", node="b"),
        ]
        assert a.stats.lost == 1


def command_calls(server: RedisServer) -> dict[str, int]:
    """How many times each command ran since the server started or ``CONFIG RESETSTAT``
    (``INFO commandstats``; a subcommand is named ``script|load``)."""
    calls = {}
    for line in server.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.removeprefix("cmdstat_").partition(":")
            calls[name] = int(fields.split(",")[0].removeprefix("calls="))
    return calls


def noscript_errors(server: RedisServer) -> int:
    """How many ``NOSCRIPT`` errors the server answered (``INFO errorstats``)."""
    match = re.search(rb"errorstat_NOSCRIPT:count=(\d+)", server.command("INFO", "errorstats"))
    return int(match[1]) if match else 0


async def script_retries(node: Node) -> int:
    """The node's ``script_retries`` counter, from its ``/metrics``."""
    status, body = await http_get(node.address.ws_port, "/metrics")
    assert status == 200
    match = re.search(rb"strands_broker_cluster_script_retries_total (\d+)\n", body)
    assert match, body
    return int(match[1])


async def test_scripts_are_called_by_sha1_even_after_a_restart(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Nodes call their scripts with EVALSHA, never EVAL with the source; after Redis
    restarts empty they load the scripts before calling them on the new connection, so no call
    fails with NOSCRIPT; after a SCRIPT FLUSH, the calls Redis refused are sent again with
    EVAL, counted, and nothing is lost."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_server.url, "a"))
        b = await start_node(nursery, node_config(redis_server.url, "b"))
        await a.client(nursery, "ann", "lobby")
        await settle(a, b)

        redis_server.command("CONFIG", "RESETSTAT")
        bob = await b.client(nursery, "bob", "lobby")  # JOIN
        await settle(b)
        await a.app.send_private_message("bob", "psst")  # SEND
        await exactly(bob, "psst")
        assert len(await a.app.presence("lobby")) == 2  # PRESENCE
        await a.cluster.renew()  # REFRESH, BACKENDS, SWEEP
        calls = command_calls(redis_server)
        assert calls["evalsha"] >= 6
        assert "eval" not in calls
        assert "script|load" not in calls  # loaded once, on the connection's first pipeline

        redis_server.kill()
        await a.redis.wait_lost()
        redis_server.start()
        for node in (a, b):
            await node.redis.wait_available()
            await node.pubsub.wait_available()
        await settle(a, b)
        await a.app.send_private_message("bob", "again")
        await exactly(bob, "again")
        assert len(await a.app.presence("lobby")) == 2
        calls = command_calls(redis_server)
        assert calls["evalsha"] >= 6
        assert "eval" not in calls
        assert calls["script|load"] >= 2 * 9  # each node loaded its nine scripts
        assert noscript_errors(redis_server) == 0
        assert await script_retries(a) == await script_retries(b) == 0

        redis_server.command("SCRIPT", "FLUSH")
        await a.app.send_private_message("bob", "after a flush")  # NOSCRIPT, then EVAL
        await exactly(bob, "after a flush")
        assert len(await b.app.presence("lobby")) == 2
        await settle(a, b)  # any pipeline that met the flush has been answered, and retried
        retried = await script_retries(a) + await script_retries(b)
        assert retried >= 1
        assert noscript_errors(redis_server) == retried
        assert command_calls(redis_server)["eval"] == retried
        assert a.stats.lost == b.stats.lost == 0


async def test_presence_while_redis_is_down_is_incomplete(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """A node that cannot reach Redis answers presence with its own members, marked
    incomplete: the client raises PresenceIncomplete carrying them."""
    with trio.fail_after(DEADLINE):
        a = await start_node(nursery, node_config(redis_server.url, "a"))
        await a.client(nursery, "ann", "lobby")
        await settle(a)
        redis_server.kill()
        await a.redis.wait_lost()
        with pytest.raises(PresenceIncomplete) as incomplete:
            await a.app.presence("lobby")
        assert incomplete.value.members == [BrokerMember(client_id="ann", node="a")]


# ---------------------------------------------------------------------- presence, one broker


@pytest.fixture
async def broker(nursery: trio.Nursery) -> BrokerAddress:
    config = BrokerConfig(
        ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None, node_id="solo"
    )
    address: BrokerAddress = await nursery.start(serve_broker, config)
    return address


async def test_presence_on_a_single_broker(broker: BrokerAddress, nursery: trio.Nursery) -> None:
    """Without Redis the broker answers presence from its own clients, its node id on each."""
    node = Node(broker, trio.CancelScope())
    app = node.app
    await nursery.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
    with trio.fail_after(DEADLINE):
        await node.client(nursery, "ann", "lobby")
        await node.client(nursery, "bob", "lobby")
        members = sorted(await app.presence("lobby"), key=str)
        assert members == [
            BrokerMember(client_id="ann", node="solo"),
            BrokerMember(client_id="bob", node="solo"),
        ]
        assert await app.presence("nobody-here") == []
        assert broker.statistics().cluster is None


async def test_presence_needs_a_connection_and_fails_when_it_is_lost() -> None:
    """presence() refuses at once without a connection, raises NotConnectedError when the
    connection is lost before the reply; against a broker that ignores the extension (the
    reference, here the fake broker) it waits until the caller's deadline."""
    client = StrandsClient()
    with pytest.raises(NotConnectedError):
        await client.presence("lobby")
    with pytest.raises(TypeError):
        await client.presence(3)  # type: ignore[arg-type]
    async with (
        open_fake_broker(heartbeat_interval=None) as fake,
        StrandsClient(connect=fake.open_backend_stream).connected() as client,
    ):
        with trio.move_on_after(0.2) as timer:
            await client.presence("lobby")
        assert timer.cancelled_caught  # the reference broker never answers
        assert not client._engine._replies._waiting  # the question given up is forgotten
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                with pytest.raises(NotConnectedError, match="lost before it replied"):
                    await client.presence("lobby")

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()  # sent, and read by the broker
            assert len(fake.actions) == 2
            await fake.drop_backends()


async def test_presence_with_wait_asks_again_after_a_reconnection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With wait=True, a question whose connection is lost before the reply is asked again
    on the next connection instead of failing."""
    config = ClientConfig(reconnect_delay=1, reconnect_jitter=0, heartbeat_interval=None)
    async with (
        open_fake_broker(heartbeat_interval=None) as fake,
        StrandsClient(connect=fake.open_backend_stream, config=config).connected() as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(client.presence, "lobby", wait=True))
        await trio.testing.wait_all_tasks_blocked()
        await fake.drop_backends()
        await fake.wait_backends(1)  # the client is back
        await trio.testing.wait_all_tasks_blocked()
        asked = [action for action in fake.actions if isinstance(action, PresenceRequest)]
        assert len(asked) == 2
        assert asked[0].request_id == asked[1].request_id
        nursery.cancel_scope.cancel()


def test_presence_frames_round_trip() -> None:
    """The presence request (an action) and reply (an event) encode to the documented JSON
    and decode back, for the broker and the backend respectively."""
    request = PresenceRequest(request_id="r1", room_id="lobby")
    assert encode(request) == (
        b'{"request_id":"r1","action":"presence","params":{"room_id":"lobby"}}\n'
    )
    assert FrameDecoder(Role.BROKER).feed(encode(request)) == [request]
    reply = PresenceReply(
        request_id="r1", room_id="lobby", members=(BrokerMember(client_id="ann", node="n1"),)
    )
    line = encode(reply)
    assert line == (
        b'{"request_id":"r1","action":"presence","params":{"room_id":"lobby",'
        b'"members":[{"client_id":"ann","node":"n1"}],"complete":true}}\n'
    )
    assert FrameDecoder(Role.BACKEND).feed(line) == [reply]


# ---------------------------------------------------------------------- configuration


def test_cluster_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """--redis (or STRANDS_REDIS_URL), --node-id, --cluster-prefix and --node-ttl reach the
    config; bad values are one line."""
    from strands_trio.__main__ import build_parser

    def parse(*argv: str) -> Any:
        return config_from_args(build_parser().parse_args(["broker", *argv]))

    config = parse("--redis", "redis://h:1/0", "--node-id", "n-1", "--node-ttl", "3")
    assert (config.redis_url, config.node_id, config.node_ttl) == ("redis://h:1/0", "n-1", 3.0)
    assert config.cluster_prefix == "strands:"
    assert parse().redis_url is None
    monkeypatch.setenv("STRANDS_REDIS_URL", "redis://env:2")
    assert parse().redis_url == "redis://env:2"
    with pytest.raises(SystemExit, match="redis_url must be"):
        parse("--redis", "http://nope")
    with pytest.raises(SystemExit, match="node_id must be"):
        parse("--node-id", "has space")
    with pytest.raises(SystemExit, match="node_ttl"):
        parse("--node-ttl", "0")


def test_a_single_broker_never_imports_the_redis_client() -> None:
    """Without redis_url, running a broker imports neither strands_trio.redis nor hiredis."""
    code = """
import sys, trio
from strands_trio.broker import BrokerConfig, serve_broker
async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_broker, BrokerConfig(ws_port=0, tcp_port=0))
        nursery.cancel_scope.cancel()
trio.run(main)
assert "hiredis" not in sys.modules and "strands_trio.redis" not in sys.modules, "imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
