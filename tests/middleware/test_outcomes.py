"""Logs that tell the truth: each event's outcome word is what happened to it (refused,
rate_limited, forbidden, invalid, ok), a guard's refusal names the handler as its author
wrote it, and a client's invalid typed message is not called the broker's error."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp, use_guards
from strands_trio.middleware import Logging, Rate, RateLimit
from strands_trio.testing import ConnectionRejected, open_fake_broker


@attrs.frozen
class Say:
    text: str


def make_app() -> StrandsApp:
    """An app whose handlers are made inside a function, as the demo's are."""
    app = StrandsApp(
        middleware=[
            Logging(level=logging.INFO),
            RateLimit(messages=Rate(burst=2, per_second=0.001)),
        ]
    )

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        return request.url != "/ws/no"

    @app.on_message("chat.say", model=Say)
    async def say(payload: Say, context: Context) -> None:
        await app.send_private_message(context.client_id, "said")

    def never(ctx: Any) -> bool:
        return False

    @use_guards(never)
    @app.on_message("chat.announce", model=Say)
    async def announce(payload: Say, context: Context) -> None:
        raise AssertionError("the guard lets nothing through")

    return app


def outcomes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.event_type, r.outcome)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "strands_trio.events" and r.event_type in ("new_message", "connection_request")  # type: ignore[attr-defined]
    ]


async def test_each_outcome_is_what_happened(caplog: pytest.LogCaptureFixture) -> None:
    """Refused request, ok, invalid, forbidden and rate-limited messages each get their word,
    and only the message that reached its handler is "ok"."""
    caplog.set_level(logging.INFO, "strands_trio")
    app = make_app()
    with trio.fail_after(10):
        async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
            with pytest.raises(ConnectionRejected):
                await broker.connect("/ws/no")
            ws = await broker.connect("/ws/lobby")
            await ws.send(json.dumps({"type": "chat.say", "text": "hi"}))
            assert await ws.receive() == "said"
            await ws.send(json.dumps({"type": "chat.say"}))  # no text: invalid
            assert json.loads(await ws.receive())["code"] == "invalid_message"
            await ws.send(json.dumps({"type": "chat.announce", "text": "all"}))  # rate limited
            assert json.loads(await ws.receive())["code"] == "rate_limited"
            await ws.close()
    assert outcomes(caplog) == [
        ("connection_request", "refused"),
        ("connection_request", "accepted"),
        ("new_message", "ok"),
        ("new_message", "invalid"),
        ("new_message", "rate_limited"),
    ]
    assert not [r for r in caplog.records if "broker reported" in r.getMessage()]
    invalid = [r for r in caplog.records if "sent an invalid 'chat.say' message" in r.getMessage()]
    assert len(invalid) == 1


async def test_a_guard_refusal_is_forbidden_and_names_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message a guard refuses is "forbidden", and the log line names ``announce`` and
    ``never``, not ``make_app.<locals>.announce``."""
    caplog.set_level(logging.INFO, "strands_trio")
    app = make_app()
    with trio.fail_after(10):
        async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
            ws = await broker.connect("/ws/lobby")
            await ws.send(json.dumps({"type": "chat.announce", "text": "all"}))
            assert json.loads(await ws.receive())["code"] == "forbidden"
            await ws.close()
    assert ("new_message", "forbidden") in outcomes(caplog)
    refusals = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].startswith("never refused a message from client ")
    assert refusals[0].endswith(" to announce")


async def test_an_app_on_error_still_hears_of_invalid_messages() -> None:
    """An app that gives its own on_error is still told of a client's invalid message."""
    app = make_app()
    errors: list[str] = []

    @app.on_error
    async def record(error: str, context: Any) -> None:
        errors.append(error)

    with trio.fail_after(10):
        async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
            ws = await broker.connect("/ws/lobby")
            await ws.send(json.dumps({"type": "chat.say"}))
            assert json.loads(await ws.receive())["code"] == "invalid_message"
            await ws.close()
    assert len(errors) == 1
    assert errors[0].startswith("invalid 'chat.say' message: ")
