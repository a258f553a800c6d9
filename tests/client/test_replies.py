"""Replies to calls: a typed route's return value goes back to the caller alone with the ref,
every failure of a call becomes an error frame with its ref, and a message without a ref is
handled exactly as before (no reply frame)."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from strands_trio import (
    CallNext,
    Context,
    ExecutionContext,
    Router,
    StrandsApp,
    exception_handler,
    use_middleware,
)
from strands_trio.middleware import (
    APIKeyVerifier,
    Auth,
    HandlerTimeout,
    Rate,
    RateLimit,
    Timeout,
)
from strands_trio.testing import FakeBroker, MiddlewareHarness, open_fake_broker


@attrs.frozen
class Echo:
    text: str


@attrs.frozen
class Echoed:
    text: str
    length: int


async def echo(payload: Echo, context: Context) -> Echoed:
    return Echoed(text=payload.text, length=len(payload.text))


def frames(harness: MiddlewareHarness) -> list[tuple[str, dict[str, Any]]]:
    return [(to, json.loads(text)) for to, text in harness.sent]


async def test_a_call_gets_the_return_value_without_a_type_tag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A model instance is unstructured into its fields (no type tag), JSON data is sent as
    is, and None is an answer too (data null): each to the caller alone, with its ref."""

    async def stats(payload: dict[str, Any], context: Context) -> dict[str, Any]:
        return {"rooms": [1, 2], "ok": True}

    async def nothing(payload: dict[str, Any], context: Context) -> None:
        return None

    harness = MiddlewareHarness(
        routes={"echo": (echo, Echo), "stats": (stats, None), "nothing": (nothing, None)}
    )
    outcome = await harness.message('{"type": "echo", "ref": 7, "text": "hi"}', client_id="ann")
    assert outcome.args is not None
    assert outcome.args[0] == Echo(text="hi")  # the ref never reaches the model
    await harness.message('{"type": "stats", "ref": "a-1"}', client_id="bob")
    await harness.message('{"type": "nothing", "ref": 2.5}', client_id="ann")
    assert frames(harness) == [
        ("ann", {"type": "reply", "ref": 7, "data": {"text": "hi", "length": 2}}),
        ("bob", {"type": "reply", "ref": "a-1", "data": {"rooms": [1, 2], "ok": True}}),
        ("ann", {"type": "reply", "ref": 2.5, "data": None}),
    ]
    assert harness.counters.replies_sent == 3


async def test_a_message_without_a_ref_gets_no_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler returning a value on a message without a ref sends nothing, and its errors
    carry no ref: what a backend sent before replies existed, it still sends."""
    harness = MiddlewareHarness(routes={"echo": (echo, Echo)})
    outcome = await harness.message('{"type": "echo", "text": "hi"}')
    assert outcome.reached
    await harness.message('{"type": "echo"}')
    await harness.message('{"type": "nope"}')
    assert [frame for _, frame in frames(harness)] == [
        {
            "type": "error",
            "code": "invalid_message",
            "reason": "invalid 'echo' message: required field missing @ $.text",
        },
        {"type": "error", "code": "unknown_type", "reason": "unknown message type 'nope'"},
    ]
    assert harness.counters.replies_sent == 0


async def deny(ctx: ExecutionContext) -> bool:
    return False


async def boom(payload: Echo, context: Context) -> None:
    raise RuntimeError("secret detail")


async def slow(payload: Echo, context: Context) -> None:
    await trio.sleep(10)


@pytest.mark.parametrize(
    ("kwargs", "message", "code", "reason"),
    [
        ({}, '{"type": "echo", "ref": 1}', "invalid_message", "required field missing @ $.text"),
        ({}, '{"type": "echo", "ref": 1, "text": 2}', "invalid_message", "expected str"),
        ({}, '{"type": "other", "ref": 1}', "unknown_type", "unknown message type 'other'"),
        ({"guards": [deny]}, None, "forbidden", "you are not allowed to do that"),
        (
            {"middleware": [RateLimit(messages=Rate(burst=1, per_second=0.01))], "warm": 1},
            None,
            "rate_limited",
            "too many messages",
        ),
        (
            {"middleware": [Auth(verifier=APIKeyVerifier(keys={"k": "bot"}))]},
            None,
            "unauthenticated",
            "sign in first",
        ),
        ({"route": boom}, None, "internal_error", "the server could not handle this message"),
        ({"middleware": [Timeout(2)], "route": slow}, None, "timeout", "no answer within 2 s"),
    ],
)
async def test_every_failure_of_a_call_carries_its_ref(
    autojump_clock: trio.testing.MockClock,
    kwargs: dict[str, Any],
    message: str | None,
    code: str,
    reason: str,
) -> None:
    """Validation, an unknown type, a guard, a rate limit, a missing identity, an exception
    and a deadline each answer the call with an error frame: its code, a reason (never the
    exception's text), and the call's ref, to the caller alone."""
    kwargs = dict(kwargs)
    route = kwargs.pop("route", echo)
    warm = kwargs.pop("warm", 0)
    harness = MiddlewareHarness(routes={"echo": (route, Echo)}, **kwargs)
    text = message or '{"type": "echo", "ref": 1, "text": "hi"}'
    for _ in range(warm):  # no ref: no reply
        assert (await harness.message('{"type": "echo", "text": "hi"}', client_id="ann")).reached
    if code in ("internal_error", "timeout"):  # raised on: the client logs and counts it
        with pytest.raises((RuntimeError, HandlerTimeout)):
            await harness.message(text, client_id="ann")
    else:
        await harness.message(text, client_id="ann")
    ((to, frame),) = frames(harness)
    assert to == "ann"
    assert (frame["type"], frame["ref"], frame["code"]) == ("error", 1, code)
    assert reason in frame["reason"]
    assert "secret" not in frame["reason"]


async def test_a_per_route_deadline_answers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Timeout on one route (``@use_middleware``) answers its calls with ``timeout`` at
    exactly the deadline; the handler's own ``trio.fail_after`` does too."""

    async def own(payload: Echo, context: Context) -> None:
        with trio.fail_after(1):
            await trio.sleep(5)

    harness = MiddlewareHarness(
        routes={"slow": (use_middleware(Timeout(0.5))(slow), Echo), "own": (own, Echo)}
    )
    start = trio.current_time()
    with pytest.raises(HandlerTimeout, match=r"did not finish within 0\.5 s"):
        await harness.message('{"type": "slow", "ref": "s", "text": ""}')
    assert trio.current_time() - start == 0.5
    with pytest.raises(trio.TooSlowError):
        await harness.message('{"type": "own", "ref": "o", "text": ""}')
    assert [(f["ref"], f["code"]) for _, f in frames(harness)] == [
        ("s", "timeout"),
        ("o", "timeout"),
    ]


@pytest.mark.parametrize("ref", ["true", "null", "{}", "[1]"])
async def test_a_ref_of_the_wrong_type_is_an_invalid_message(
    autojump_clock: trio.testing.MockClock, ref: str
) -> None:
    """A ref that is neither a string nor a number cannot be matched: the message is refused
    as invalid (an error frame without a ref), never handled without its answer."""
    harness = MiddlewareHarness(routes={"echo": (echo, Echo)})
    outcome = await harness.message(f'{{"type": "echo", "ref": {ref}, "text": "hi"}}')
    assert outcome.args is not None
    assert outcome.args[0] == frames(harness)[0][1]["reason"]  # on_error, not the handler
    ((_, frame),) = frames(harness)
    assert frame == {
        "type": "error",
        "code": "invalid_message",
        "reason": "invalid 'echo' message: 'ref' must be a string or a number",
    }


async def test_an_exception_handler_decides_what_the_caller_is_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception an exception handler catches is no internal error: its own error frame
    (through ctx.send_error) carries the ref."""

    @exception_handler(RuntimeError)
    async def denied(ctx: ExecutionContext, exc: Exception) -> None:
        await ctx.send_error("no_luck", "try later")

    harness = MiddlewareHarness(routes={"echo": (boom, Echo)}, exception_handlers=[denied])
    await harness.message('{"type": "echo", "ref": "x", "text": "hi"}')
    assert [f for _, f in frames(harness)] == [
        {"type": "error", "ref": "x", "code": "no_luck", "reason": "try later"}
    ]


async def test_a_reply_that_cannot_be_encoded_is_an_internal_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler returning what JSON cannot carry is a bug: logged at ERROR, and the caller
    gets an internal_error instead of silence."""

    async def bad(payload: Echo, context: Context) -> object:
        return {"when": object()}

    harness = MiddlewareHarness(routes={"echo": (bad, Echo)})
    await harness.message('{"type": "echo", "ref": 3, "text": "hi"}')
    assert [(f["ref"], f["code"]) for _, f in frames(harness)] == [(3, "internal_error")]
    assert any(r.levelno == logging.ERROR and "cannot encode" in r.message for r in caplog.records)


async def test_the_raw_fallback_answers_calls_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With typed routes and a raw on_message, a call no route matches reaches the raw handler
    and is answered with what it returns (null for None)."""

    async def raw(message: str, context: Context) -> None:
        pass

    harness = MiddlewareHarness(routes={"echo": (echo, Echo)}, handlers={"on_message": raw})
    outcome = await harness.message('{"type": "legacy", "ref": 4}')
    assert outcome.reached
    assert [f for _, f in frames(harness)] == [{"type": "reply", "ref": 4, "data": None}]


async def test_a_reply_after_the_caller_left_is_dropped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that disconnects while its call runs gets nothing: the reply is dropped,
    counted and logged at DEBUG; the next caller of the same id is answered again."""
    release = trio.Event()

    async def wait(payload: Echo, context: Context) -> Echoed:
        await release.wait()
        return Echoed(text=payload.text, length=0)

    harness = MiddlewareHarness(routes={"echo": (wait, Echo)})
    caplog.set_level(logging.DEBUG, logger="strands_trio.calls")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.message, '{"type": "echo", "ref": 1, "text": "a"}')
        await trio.testing.wait_all_tasks_blocked()
        await harness.disconnect("c1")
        release.set()
    assert harness.sent == []
    assert harness.counters.replies_dropped == 1
    assert [r.levelno for r in caplog.records if "client c1 left" in r.message] == [logging.DEBUG]
    await harness.message('{"type": "echo", "ref": 2, "text": "b"}')
    assert [f["ref"] for _, f in frames(harness)] == [2]


def test_the_reply_field_is_configurable_and_cannot_collide() -> None:
    """A model with a field named as the reply field is refused at registration (the field
    would be stripped before validation); another name, or none, lets it through."""

    @attrs.frozen
    class Note:
        ref: str

    with pytest.raises(ValueError, match=r"Note has a field 'ref', the app's reply field"):
        StrandsApp().on_message("note", model=Note)(echo)
    StrandsApp(reply_field="call_id").on_message("note", model=Note)(echo)
    StrandsApp(reply_field=None).on_message("note", model=Note)(echo)
    with pytest.raises(ValueError, match="cannot both be 'type'"):
        StrandsApp(reply_field="type")
    with pytest.raises(ValueError, match="non-empty string"):
        Router(reply_field="")


@pytest.mark.parametrize("reference", [True, False])
async def test_calls_end_to_end(reference: bool) -> None:
    """Through an app and the broker (in its reference-broker mode too, since replies are
    private messages): the caller alone gets the reply with its ref, in the app's own field
    names; a message without a ref still gets no reply; a middleware's error carries the ref."""
    app = StrandsApp(message_type_field="op", reply_field="cid")

    @app.on_message("echo", model=Echo)
    async def handler(payload: Echo, context: Context) -> Echoed:
        return Echoed(text=payload.text.upper(), length=len(payload.text))

    @app.on_message("shout", model=Echo)
    def sync(payload: Echo, context: Context) -> dict[str, str]:  # in a worker thread
        return {"loud": payload.text.upper()}

    async def refuse(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.payload and ctx.payload.get("text") == "no":
            await ctx.send_error("forbidden", "not that")
            return
        await call_next(ctx)

    app.middleware.append(refuse)
    # The real clock: an autojump clock would jump past the broker's silence while the sync
    # handler's thread runs.
    with trio.fail_after(10):
        await run_calls(app, reference)


async def run_calls(app: StrandsApp, reference: bool) -> None:
    async with (
        open_fake_broker(reference=reference, heartbeat_interval=None) as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        caller = await broker.connect("/ws/r")
        other = await broker.connect("/ws/r")
        await caller.send('{"op": "echo", "cid": "c1", "text": "hi"}')
        assert json.loads(await caller.receive()) == {
            "op": "reply",
            "cid": "c1",
            "data": {"text": "HI", "length": 2},
        }
        await caller.send('{"op": "shout", "cid": 9, "text": "yo"}')
        assert json.loads(await caller.receive()) == {
            "op": "reply",
            "cid": 9,
            "data": {"loud": "YO"},
        }
        await caller.send('{"op": "echo", "cid": 10, "text": "no"}')
        assert json.loads(await caller.receive()) == {
            "op": "error",
            "cid": 10,
            "code": "forbidden",
            "reason": "not that",
        }
        await caller.send('{"op": "echo", "text": "plain"}')
        await caller.send('{"op": "echo", "cid": 11, "text": "x"}')
        assert json.loads(await caller.receive())["cid"] == 11  # nothing for "plain"
        with pytest.raises(trio.WouldBlock):
            other.receive_nowait()
        assert app.statistics().replies_sent == 3


async def test_a_caller_leaving_the_broker_gets_nothing_late(
    autojump_clock: trio.testing.MockClock, broker: FakeBroker
) -> None:
    """End to end: a caller that closes its socket while its call runs is never sent the
    reply (the backend drops it on the broker's ``disconnected``), and nobody else gets it."""
    app = StrandsApp()
    release = trio.Event()

    @app.on_message("wait", model=Echo)
    async def wait(payload: Echo, context: Context) -> str:
        await release.wait()
        return "late"

    async with app.connected(connect=broker.open_backend_stream):
        caller = await broker.connect("/ws/r")
        await caller.send('{"type": "wait", "ref": 1, "text": ""}')
        await trio.testing.wait_all_tasks_blocked()
        await caller.close()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert app.statistics().replies_dropped == 1
        assert app.statistics().replies_sent == 0
        assert broker.private_messages(caller.client_id) == []
