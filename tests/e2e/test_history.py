"""Recovery end to end, real sockets on our broker: a client that missed room messages while
disconnected gets them back privately, in order and exactly as first sent, then live ones;
a live message during the replay; history that no longer reaches back, or a store that lost
the room, answered ``recovered: false``; and, on Redis, a recovery answered by another
backend replica after the first one stopped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker
from strands_trio.middleware import History, HistoryStore, MemoryHistory, RedisHistory, Since
from strands_trio.redis import open_live_redis

from .._wsclient import WSClient

pytest_plugins = ["tests._redis"]


@attrs.frozen
class Post:
    text: str


def make_app(history: History) -> StrandsApp:
    """A backend: the client id from the path, everyone in ``lobby``, ``post`` kept."""
    app = StrandsApp(middleware=[history])

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.client_id = request.path.removeprefix("/ws/")
        request.context.room_id = "lobby"
        return True

    @app.on_message("post", model=Post)
    async def post(payload: Post, context: Context) -> None:
        said = {"type": "said", "text": payload.text}
        await history.send_room_message(app, context.room_id, said)

    return app


@pytest.fixture
async def broker(nursery: trio.Nursery) -> BrokerAddress:
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0)
    address: BrokerAddress = await nursery.start(serve_broker, config)
    return address


Connect = Callable[[str], Awaitable[WSClient]]


@pytest.fixture
async def connect(broker: BrokerAddress) -> AsyncIterator[Connect]:
    """Open a WebSocket to the broker at a path; all are closed at the end of the test."""
    opened: list[WSClient] = []

    async def open_client(path: str) -> WSClient:
        opened.append(await WSClient.connect(broker.ws_port, path))
        return opened[-1]

    yield open_client
    for ws in opened:
        await ws.aclose()


async def post(ws: WSClient, text: str) -> dict[str, Any]:
    """Post *text* from *ws* and return it as *ws* receives it back."""
    await ws.send(json.dumps({"type": "post", "text": text}))
    return json.loads(await ws.receive())  # type: ignore[no-any-return]


async def recover(ws: WSClient, epoch: str, offset: int) -> None:
    rooms = {"lobby": {"epoch": epoch, "offset": offset}}
    await ws.send(json.dumps({"type": "strands.recover", "rooms": rooms}))


@attrs.define
class SlowStore:
    """A memory store whose answers to recoveries wait for :attr:`gate`."""

    inner: MemoryHistory = attrs.field(factory=MemoryHistory)
    gate: trio.Event = attrs.field(factory=trio.Event)
    asked: trio.Event = attrs.field(factory=trio.Event)

    async def append(self, room: str, text: str) -> Any:
        return await self.inner.append(room, text)

    async def since(self, room: str, epoch: str, offset: int) -> Since:
        self.asked.set()
        await self.gate.wait()
        return await self.inner.since(room, epoch, offset)


async def test_missed_messages_come_back_in_order_then_live_ones(
    broker: BrokerAddress, nursery: trio.Nursery, connect: Connect
) -> None:
    """Ann misses c and d while away; back, she gets them privately, byte for byte as Bob
    got them, then ``recovered``, then a live e."""
    app = make_app(History(store=MemoryHistory()))
    with trio.fail_after(10):
        await nursery.start(app.serve, "127.0.0.1", broker.tcp_port)
        ann = await connect("/ws/ann")
        bob = await connect("/ws/bob")
        a = await post(ann, "a")
        await bob.receive()
        await ann.close()
        seen_by_bob = [json.dumps(await post(bob, text), separators=(",", ":")) for text in "cd"]
        ann = await connect("/ws/ann")
        await recover(ann, a["epoch"], 1)
        replay = [await ann.receive() for _ in range(2)]
        answer = json.loads(await ann.receive())
        e = await post(bob, "e")
        live = json.loads(await ann.receive())
    assert [json.loads(m) for m in replay] == [json.loads(m) for m in seen_by_bob]
    assert [json.loads(m)["offset"] for m in replay] == [2, 3]
    assert answer == {
        "type": "strands.recovered",
        "rooms": {"lobby": {"recovered": True, "epoch": a["epoch"], "offset": 3}},
    }
    assert live == e
    assert e["offset"] == 4


async def test_a_live_message_during_the_replay(
    broker: BrokerAddress, nursery: trio.Nursery, connect: Connect
) -> None:
    """A message posted while the store prepares Ann's replay reaches her live first; the
    replay that follows carries it too, identical (the client drops the second copy), and
    nothing of the replay comes after ``recovered``."""
    store = SlowStore()
    app = make_app(History(store=store))  # type: ignore[arg-type]
    with trio.fail_after(10):
        await nursery.start(app.serve, "127.0.0.1", broker.tcp_port)
        ann = await connect("/ws/ann")
        bob = await connect("/ws/bob")
        a = await post(ann, "a")
        await bob.receive()
        await recover(ann, a["epoch"], 1)
        await store.asked.wait()
        b = await post(bob, "b")
        live = await ann.receive()
        store.gate.set()
        replayed = await ann.receive()
        answer = json.loads(await ann.receive())
    assert json.loads(live) == b
    assert b["offset"] == 2
    assert replayed == live
    assert answer["rooms"]["lobby"] == {"recovered": True, "epoch": a["epoch"], "offset": 2}


async def test_too_old_and_lost_history_are_not_recovered(
    broker: BrokerAddress, nursery: trio.Nursery, connect: Connect
) -> None:
    """When the store no longer reaches back, or restarted empty (a new epoch), the answer
    is ``recovered: false`` with the reason and the room's current position, and nothing is
    replayed."""
    store = MemoryHistory(size=2)
    app = make_app(History(store=store))
    with trio.fail_after(10):
        await nursery.start(app.serve, "127.0.0.1", broker.tcp_port)
        ann = await connect("/ws/ann")
        first = [await post(ann, text) for text in "abcd"]
        epoch = first[0]["epoch"]
        await recover(ann, epoch, 1)
        too_old = json.loads(await ann.receive())
        store.clear()
        after = await post(ann, "e")
        await recover(ann, epoch, 4)
        lost = json.loads(await ann.receive())
    assert too_old["rooms"]["lobby"] == {
        "recovered": False,
        "epoch": epoch,
        "offset": 4,
        "reason": "too_old",
    }
    assert after["epoch"] != epoch
    assert after["offset"] == 1
    assert lost["rooms"]["lobby"] == {
        "recovered": False,
        "epoch": after["epoch"],
        "offset": 1,
        "reason": "epoch_changed",
    }


async def test_another_replica_replays_from_redis(
    broker: BrokerAddress, redis_url: str, connect: Connect
) -> None:
    """Ann's backend stops while she is away; back, the broker hands her to the other
    replica, which replays what she missed from Redis."""
    with trio.fail_after(15):
        async with (
            open_live_redis(redis_url) as live_a,
            open_live_redis(redis_url) as live_b,
            trio.open_nursery() as nursery,
        ):
            await live_a.wait_available()
            await live_b.wait_available()
            stores: list[HistoryStore] = [RedisHistory(live_a), RedisHistory(live_b)]
            app_a, app_b = (make_app(History(store=store)) for store in stores)
            scope_a = trio.CancelScope()
            nursery.start_soon(run_until_cancelled, app_a, broker.tcp_port, scope_a)
            await broker.hub.wait_backends(1)
            ann = await connect("/ws/ann")
            a = await post(ann, "a")
            await ann.close()
            await nursery.start(app_b.serve, "127.0.0.1", broker.tcp_port)
            await broker.hub.wait_backends(2)
            bob = await connect("/ws/bob")
            missed = [await post(bob, text) for text in "bc"]
            scope_a.cancel()
            await broker.hub.wait_backends(1)
            ann = await connect("/ws/ann")
            await recover(ann, a["epoch"], 1)
            replay = [json.loads(await ann.receive()) for _ in range(2)]
            answer = json.loads(await ann.receive())
            nursery.cancel_scope.cancel()
    assert replay == missed
    assert answer["rooms"]["lobby"] == {"recovered": True, "epoch": a["epoch"], "offset": 3}


async def run_until_cancelled(app: StrandsApp, port: int, scope: trio.CancelScope) -> None:
    with scope:
        await app.serve("127.0.0.1", port)
