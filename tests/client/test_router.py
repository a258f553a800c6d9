"""Typed message routing: routes by type field, validation before the handler, the fallback,
and the error frames the client gets."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio

from strands_trio import (
    CallNext,
    Context,
    ExecutionContext,
    Router,
    StrandsApp,
    make_message_converter,
)
from strands_trio.testing import FakeBroker, MiddlewareHarness


@attrs.frozen
class ChatSend:
    text: str
    to: str | None = None


@attrs.frozen
class Typed:
    type: str
    n: int


def error_of(sent: list[tuple[str, str]]) -> dict[str, Any]:
    ((_, text),) = sent
    return json.loads(text)  # type: ignore[no-any-return]


async def test_route_structures_the_payload() -> None:
    """A message with a routed type reaches its handler as an instance of the model, with the
    type field left out (or kept, when the model has it)."""

    async def send(payload: ChatSend, context: Context) -> None: ...

    async def typed(payload: Typed, context: Context) -> None: ...

    async def raw(payload: dict[str, Any], context: Context) -> None: ...

    harness = MiddlewareHarness(
        routes={"chat.send": (send, ChatSend), "typed": (typed, Typed), "raw": (raw, None)}
    )
    outcome = await harness.message('{"type": "chat.send", "text": "hi"}')
    assert outcome.args is not None
    assert outcome.args[0] == ChatSend(text="hi")
    outcome = await harness.message('{"type": "typed", "n": 3}')
    assert outcome.args is not None
    assert outcome.args[0] == Typed(type="typed", n=3)
    outcome = await harness.message('{"type": "raw", "anything": [1]}')
    assert outcome.args is not None
    assert outcome.args[0] == {"type": "raw", "anything": [1]}
    assert harness.sent == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('{"type": "chat.send"}', "required field missing @ $.text"),
        ('{"type": "chat.send", "text": 5}', "expected str @ $.text"),
        ('{"type": "chat.send", "text": "x", "extra": 1}', "extra fields found (extra) @ $"),
        ('{"type": "chat.send", "text": "x", "to": false}', "@ $.to"),
    ],
)
async def test_invalid_payload_never_reaches_the_handler(message: str, reason: str) -> None:
    """A payload that does not fit the model gets an invalid_message error frame with the
    reason and its path, on_error is called, and the handler is not."""
    errors: list[str] = []
    handled: list[ChatSend] = []

    async def send(payload: ChatSend, context: Context) -> None:
        handled.append(payload)

    async def on_error(error: str, context: Context) -> None:
        errors.append(error)

    harness = MiddlewareHarness(
        routes={"chat.send": (send, ChatSend)}, handlers={"on_error": on_error}
    )
    await harness.message(message, client_id="ann")
    assert handled == []
    frame = error_of(harness.sent)
    assert frame["type"] == "error"
    assert frame["code"] == "invalid_message"
    assert reason in frame["reason"]
    assert frame["reason"].startswith("invalid 'chat.send' message: ")
    assert errors == [frame["reason"]]
    assert harness.counters.messages_invalid == 1


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("plain text", "message is not JSON"),
        ("[1, 2]", "message is not a JSON object"),
        ('{"kind": "chat.send"}', "message has no string 'type' field"),
        ('{"type": 7}', "message has no string 'type' field"),
        ('{"type": "chat.edit"}', "unknown message type 'chat.edit'"),
    ],
)
async def test_unrouted_without_fallback_gets_unknown_type(message: str, reason: str) -> None:
    """With routes and no raw handler, a message no route matches gets an unknown_type error
    frame saying why."""

    async def send(payload: ChatSend, context: Context) -> None: ...

    harness = MiddlewareHarness(routes={"chat.send": (send, ChatSend)})
    await harness.message(message)
    assert error_of(harness.sent) == {"type": "error", "code": "unknown_type", "reason": reason}
    assert harness.counters.messages_unrouted == 1


async def test_guard_runs_before_validation() -> None:
    """Guards see routed messages before their payload is validated, so a refused client
    learns nothing about the schema."""

    async def send(payload: ChatSend, context: Context) -> None: ...

    harness = MiddlewareHarness(routes={"chat.send": (send, ChatSend)}, guards=[lambda c: False])
    await harness.message('{"type": "chat.send"}')
    assert error_of(harness.sent)["code"] == "forbidden"


async def test_middleware_sees_the_decoded_payload() -> None:
    """switch_to_message().get_payload() is the decoded object of a routed message."""
    payloads: list[Any] = []

    async def peek(ctx: ExecutionContext, call_next: CallNext) -> None:
        payloads.append(ctx.switch_to_message().get_payload())
        await call_next(ctx)

    async def send(payload: ChatSend, context: Context) -> None: ...

    harness = MiddlewareHarness([peek], routes={"chat.send": (send, ChatSend)})
    await harness.message('{"type": "chat.send", "text": "x"}')
    assert payloads == [{"type": "chat.send", "text": "x"}]


def test_router_refuses_duplicates_and_bad_arguments() -> None:
    """A type routed twice, a non-string type, a non-class model and an empty field name are
    errors when registered."""
    router = Router()
    router.add("a", print)
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("a", print)
    with pytest.raises(TypeError, match="must be a str"):
        router.add(1, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a class"):
        router.add("b", print, model="ChatSend")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        Router(type_field="")
    app = StrandsApp()
    with pytest.raises(TypeError, match="model= needs a message type"):
        app.on_message(print, model=ChatSend)  # type: ignore[call-overload]


def test_strict_converter() -> None:
    """The default converter takes no string for an int, no int for a string or a bool, and
    an int for a float."""

    @attrs.frozen
    class Numbers:
        i: int
        f: float
        b: bool

    converter = make_message_converter()
    assert converter.structure({"i": 1, "f": 2, "b": True}, Numbers) == Numbers(i=1, f=2.0, b=True)
    for bad in ({"i": "1", "f": 1.0, "b": True}, {"i": True, "f": 1.0, "b": True}):
        with pytest.raises(Exception, match="Numbers"):
            converter.structure(bad, Numbers)


async def test_app_routes_end_to_end(broker: FakeBroker) -> None:
    """Through an app and a broker: typed routes (async and sync handlers), a configurable
    type field, and the raw handler as the fallback."""
    app = StrandsApp(message_type_field="op")

    @app.on_message("say", model=ChatSend)
    async def say(payload: ChatSend, context: Context) -> None:
        await app.send_room_message(context.room_id, f"said {payload.text}")

    @app.on_message("shout", model=ChatSend)
    def shout(payload: ChatSend, context: Context) -> None:  # sync: in a worker thread
        trio.from_thread.run(app.send_room_message, context.room_id, payload.text.upper())

    @app.on_message
    async def fallback(message: str, context: Context) -> None:
        await app.send_room_message(context.room_id, f"raw {message}")

    async with app.connected(connect=broker.open_backend_stream):
        ws = await broker.connect("/ws/r")
        await ws.send('{"op": "say", "text": "a"}')
        assert await ws.receive() == "said a"
        await ws.send('{"op": "shout", "text": "b"}')
        assert await ws.receive() == "B"
        await ws.send('{"type": "say", "text": "c"}')
        assert await ws.receive() == 'raw {"type": "say", "text": "c"}'
        await ws.send('{"op": "say"}')
        error = json.loads(await ws.receive())
        assert (error["op"], error["code"]) == ("error", "invalid_message")


@attrs.frozen
class Said:
    by: str
    text: str


async def test_app_sends_model_instances_as_typed_messages(broker: FakeBroker) -> None:
    """An instance of a routed model, or of an outgoing one, is sent as JSON with its type
    field (the app's field name), encoded by the app's converter, to a room, a client or all."""
    app = StrandsApp(message_type_field="op")
    app.outgoing("chat.said")(Said)

    @app.on_message("say", model=ChatSend)
    async def say(payload: ChatSend, context: Context) -> None:
        await app.send_room_message(context.room_id, Said(by=context.client_id, text=payload.text))
        await app.send_private_message(context.client_id, payload)  # a routed model
        await app.broadcast_message(Typed(type="own", n=1))  # its own type field wins

    app.on_message("typed", model=Typed)(say)
    async with app.connected(connect=broker.open_backend_stream):
        ws = await broker.connect("/ws/r")
        await ws.send('{"op": "say", "text": "hi"}')
        assert json.loads(await ws.receive()) == {
            "op": "chat.said",
            "by": ws.client_id,
            "text": "hi",
        }
        assert json.loads(await ws.receive()) == {"op": "say", "text": "hi", "to": None}
        assert json.loads(await ws.receive()) == {"op": "typed", "type": "own", "n": 1}


def test_sending_an_unknown_or_ambiguous_model_is_a_type_error() -> None:
    """Only a model of exactly one message type can be sent as an object; the error says how
    to register one."""
    router = Router()
    router.add("a", print, ChatSend)
    with pytest.raises(TypeError, match=r"Said is not the model of any message type"):
        router.encode(Said(by="x", text="y"))
    router.add_outgoing("b", ChatSend)
    with pytest.raises(TypeError, match="several message types"):
        router.encode(ChatSend(text="x"))
    router.add_outgoing("said", Said)
    router.add_outgoing("said", Said)  # the same tag again is no ambiguity
    assert json.loads(router.encode(Said(by="x", text="y"))) == {
        "type": "said",
        "by": "x",
        "text": "y",
    }
    with pytest.raises(TypeError, match="model must be a class"):
        router.add_outgoing("c", Said(by="x", text="y"))  # type: ignore[arg-type]
