"""Room history: the memory store's offsets, epochs and bounds; the History middleware's send
path and its answer to ``strands.recover``, through FakeBroker in the reference broker's mode
and in ours."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import History, MemoryHistory, Position, Rate, RateLimit
from strands_trio.testing import FakeBroker, FakeWebSocket, open_fake_broker

# ---------------------------------------------------------------------- the memory store


async def test_offsets_count_from_one_per_room() -> None:
    """Each room numbers its messages 1, 2, 3 ... under one epoch of its own."""
    store = MemoryHistory(size=10)
    with trio.fail_after(5):
        a1 = await store.append("a", "{}")
        a2 = await store.append("a", "{}")
        b1 = await store.append("b", "{}")
    assert (a1.offset, a2.offset, b1.offset) == (1, 2, 1)
    assert a1.epoch == a2.epoch != b1.epoch
    assert len(a1.epoch) == 16


async def test_since_gives_what_came_after_the_offset_in_order() -> None:
    """A client at offset 2 gets messages 3 to 5; one at the last offset gets nothing."""
    store = MemoryHistory(size=10)
    with trio.fail_after(5):
        for n in range(1, 6):
            position = await store.append("a", f'{{"n":{n}}}')
        since = await store.since("a", position.epoch, 2)
        current = await store.since("a", position.epoch, 5)
    assert since.recovered
    assert (since.epoch, since.offset) == (position.epoch, 5)
    assert since.messages == ((3, '{"n":3}'), (4, '{"n":4}'), (5, '{"n":5}'))
    assert current.recovered
    assert current.messages == ()


async def test_size_bounds_what_is_kept() -> None:
    """Past *size* messages, the oldest go, and a client that missed them cannot recover."""
    store = MemoryHistory(size=3)
    with trio.fail_after(5):
        for _ in range(5):
            position = await store.append("a", "{}")
        gone = await store.since("a", position.epoch, 1)
        kept = await store.since("a", position.epoch, 2)
    assert (gone.recovered, gone.reason, gone.messages) == (False, "too_old", ())
    assert [n for n, _ in kept.messages] == [3, 4, 5]
    assert store.statistics().expired == 2


async def test_max_age_bounds_what_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    """A message older than *max_age* is gone: a client that missed it cannot recover, one
    that had it gets the younger ones."""
    store = MemoryHistory(size=100, max_age=10)
    with trio.fail_after(100):
        first = await store.append("a", '{"n":1}')
        await trio.sleep(6)
        await store.append("a", '{"n":2}')
        await trio.sleep(5)  # message 1 is 11 s old, message 2 is 5 s old
        late = await store.since("a", first.epoch, 0)
        fine = await store.since("a", first.epoch, 1)
    assert (late.recovered, late.reason) == (False, "too_old")
    assert fine.messages == ((2, '{"n":2}'),)


async def test_an_unknown_epoch_or_offset_cannot_recover() -> None:
    """Another epoch (the store lost the room) or an offset never reached is refused with the
    room's position, so that the client starts again from there."""
    store = MemoryHistory()
    with trio.fail_after(5):
        position = await store.append("a", "{}")
        store.clear()
        again = await store.append("a", "{}")
        lost = await store.since("a", position.epoch, 1)
        ahead = await store.since("a", again.epoch, 7)
    assert again.epoch != position.epoch
    assert again.offset == 1
    assert (lost.recovered, lost.reason, lost.epoch, lost.offset) == (
        False,
        "epoch_changed",
        again.epoch,
        1,
    )
    assert (ahead.recovered, ahead.reason) == (False, "ahead")


async def test_a_client_that_saw_nothing_catches_up_from_the_start() -> None:
    """("", 0) follows a room from its start: everything while its first message is kept
    (nothing for a room that has said nothing), too_old once it is gone."""
    store = MemoryHistory(size=3)
    with trio.fail_after(5):
        empty = await store.since("quiet", "", 0)
        for n in range(1, 4):
            await store.append("a", f'{{"n":{n}}}')
        whole = await store.since("a", "", 0)
        await store.append("a", '{"n":4}')
        gone = await store.since("a", "", 0)
    assert (empty.recovered, empty.messages, empty.offset) == (True, (), 0)
    assert whole.recovered
    assert [n for n, _ in whole.messages] == [1, 2, 3]
    assert (gone.recovered, gone.reason) == (False, "too_old")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, ValueError),
        ({"size": 1.5}, TypeError),
        ({"max_age": 0}, ValueError),
        ({"max_age": "5"}, TypeError),
    ],
)
def test_memory_store_refuses_bad_bounds(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Bounds that cannot work are refused when the store is made."""
    with pytest.raises(error):
        MemoryHistory(**kwargs)


def test_memory_store_without_age_limit() -> None:
    """``max_age=math.inf`` keeps messages by count only."""
    assert MemoryHistory(max_age=math.inf).max_age == math.inf


# ---------------------------------------------------------------------- the middleware


@attrs.frozen
class Say:
    text: str


def make_app(history: History, *before: Any) -> StrandsApp:
    """A chat backend: ``chat.say`` is kept as ``chat.said`` in the client's room; *before*
    are middleware listed before the history."""
    app = StrandsApp(middleware=[*before, history])

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.client_id = request.url.rsplit("/", 1)[-1]
        request.context.room_id = "lobby"
        return True

    @app.on_message("chat.say", model=Say)
    async def say(payload: Say, context: Context) -> None:
        await history.send_room_message(
            app, context.room_id, {"type": "chat.said", "text": payload.text}
        )

    return app


@pytest.fixture(params=[True, False], ids=["reference", "ours"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[FakeBroker]:
    async with open_fake_broker(heartbeat_interval=None, reference=request.param) as broker:
        yield broker


async def receive(ws: FakeWebSocket) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await ws.receive())
    return data


async def test_room_messages_carry_room_offset_and_epoch(broker: FakeBroker) -> None:
    """Every kept room message reaches the room with its room, offset and epoch added."""
    history = History(store=MemoryHistory())
    app = make_app(history)
    with trio.fail_after(5):
        async with app.connected(connect=broker.open_backend_stream):
            ann = await broker.connect("/ws/ann")
            await ann.send('{"type":"chat.say","text":"one"}')
            await ann.send('{"type":"chat.say","text":"two"}')
            one, two = await receive(ann), await receive(ann)
    assert one == {
        "type": "chat.said",
        "text": "one",
        "room": "lobby",
        "offset": 1,
        "epoch": one["epoch"],
    }
    assert (two["offset"], two["epoch"]) == (2, one["epoch"])
    assert history.statistics().kept == 2


async def test_recover_replays_privately_in_order_then_answers(broker: FakeBroker) -> None:
    """A client that asks from offset 1 gets messages 2 and 3 again, alone and exactly as
    first sent, then ``strands.recovered``; the room's other client gets nothing."""
    history = History(store=MemoryHistory())
    app = make_app(history)
    with trio.fail_after(5):
        async with app.connected(connect=broker.open_backend_stream):
            ann = await broker.connect("/ws/ann")
            bob = await broker.connect("/ws/bob")
            sent = []
            for text in ("a", "b", "c"):
                await ann.send(json.dumps({"type": "chat.say", "text": text}))
                sent.append(await ann.receive())
                await bob.receive()
            epoch = json.loads(sent[0])["epoch"]
            await bob.send(
                json.dumps(
                    {"type": "strands.recover", "rooms": {"lobby": {"epoch": epoch, "offset": 1}}}
                )
            )
            replay = [await bob.receive() for _ in range(2)]
            answer = await receive(bob)
            await ann.send('{"type":"chat.say","text":"d"}')
            assert (await receive(ann))["offset"] == 4
    assert replay == sent[1:]
    assert answer == {
        "type": "strands.recovered",
        "rooms": {"lobby": {"recovered": True, "epoch": epoch, "offset": 3}},
    }
    stats = history.statistics()
    assert (stats.recovers, stats.recovered, stats.replayed) == (1, 1, 2)


async def test_recover_refuses_what_it_cannot_give(broker: FakeBroker) -> None:
    """Another room, an old epoch, an offset past the kept history and a bad entry are each
    answered ``recovered: false`` with a reason, and nothing is replayed."""
    history = History(store=MemoryHistory(size=2))
    app = make_app(history)
    with trio.fail_after(5):
        async with app.connected(connect=broker.open_backend_stream):
            ann = await broker.connect("/ws/ann")
            for n in range(4):
                await ann.send(json.dumps({"type": "chat.say", "text": str(n)}))
                last = await receive(ann)
            rooms = {
                "lobby": {"epoch": last["epoch"], "offset": 1},
                "secret": {"epoch": "x", "offset": 0},
                "bad": {"offset": "1"},
            }
            await ann.send(json.dumps({"type": "strands.recover", "rooms": rooms}))
            answer = await receive(ann)
    assert answer["type"] == "strands.recovered"
    assert answer["rooms"] == {
        "lobby": {"recovered": False, "epoch": last["epoch"], "offset": 4, "reason": "too_old"},
        "secret": {"recovered": False, "epoch": "", "offset": 0, "reason": "forbidden"},
        "bad": {"recovered": False, "epoch": "", "offset": 0, "reason": "invalid"},
    }
    assert history.statistics().invalid == 1


async def test_recover_requests_meet_a_rate_limit_listed_before(broker: FakeBroker) -> None:
    """Each recover may replay a room's whole history: behind RateLimit (the documented
    order), a client flooding them gets its burst answered and rate_limited frames after."""
    history = History(store=MemoryHistory())
    app = make_app(history, RateLimit(messages=Rate(burst=3, per_second=0.001)))
    with trio.fail_after(5):
        async with app.connected(connect=broker.open_backend_stream):
            ann = await broker.connect("/ws/ann")
            ask = {"type": "strands.recover", "rooms": {"lobby": {"epoch": "", "offset": 0}}}
            for _ in range(5):
                await ann.send(json.dumps(ask))
            answers = [await receive(ann) for _ in range(5)]
    kinds = [(a["type"], a.get("code")) for a in answers]
    assert kinds == [("strands.recovered", None)] * 3 + [("error", "rate_limited")] * 2
    assert history.statistics().recovers == 3


async def test_recover_never_reaches_the_app() -> None:
    """The recover message is the middleware's: the app's raw handler never sees it, and
    other messages pass through untouched."""
    seen: list[str] = []
    both = trio.Event()
    history = History()
    app = StrandsApp(middleware=[history])

    @app.on_message
    async def on_message(message: str, context: Context) -> None:
        seen.append(message)
        if len(seen) == 2:
            both.set()

    with trio.fail_after(5):
        async with (
            open_fake_broker(heartbeat_interval=None) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ws = await broker.connect("/ws/")
            await ws.send('{"type":"strands.recover","rooms":{}}')
            assert await receive(ws) == {"type": "strands.recovered", "rooms": {}}
            await ws.send('{"type":"hello","note":"strands.recover"}')
            await ws.send("not json")
            await both.wait()
    assert seen == ['{"type":"hello","note":"strands.recover"}', "not json"]


async def test_rooms_and_types_choose_what_is_kept() -> None:
    """A room or a type not kept is sent unchanged, without an offset."""
    history = History(rooms={"lobby"}, types={"chat.said"})
    sent: list[tuple[str, str]] = []

    class Sender:
        async def send_room_message(
            self, room_id: str, message: str, *, wait: bool = False
        ) -> None:
            sent.append((room_id, message))

    with trio.fail_after(5):
        kept = await history.send_room_message(Sender(), "lobby", '{"type":"chat.said"}')  # type: ignore[arg-type]
        other_type = await history.send_room_message(Sender(), "lobby", '{"type":"typing"}')  # type: ignore[arg-type]
        other_room = await history.send_room_message(Sender(), "hall", '{"type":"chat.said"}')  # type: ignore[arg-type]
    assert isinstance(kept, Position)
    assert other_type is None
    assert other_room is None
    assert sent[1:] == [("lobby", '{"type":"typing"}'), ("hall", '{"type":"chat.said"}')]
    assert json.loads(sent[0][1])["offset"] == 1
    with pytest.raises(TypeError, match="JSON object"):
        await history.send_room_message(Sender(), "lobby", "[1]")  # type: ignore[arg-type]
