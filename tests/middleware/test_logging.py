"""The logging middleware: one structured record per event, after the chain, with exact
virtual durations, the outcome, redacted headers, and no secret anywhere in a record."""

from __future__ import annotations

import logging
import re
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from strands_trio import (
    CallNext,
    ConnectionRequestContext,
    Context,
    EventType,
    ExecutionContext,
)
from strands_trio.middleware import _logging
from strands_trio.middleware._logging import (
    DEFAULT_REDACTED_HEADERS,
    Logging,
    LoggingConfig,
    LoggingStatistics,
)
from strands_trio.testing import MiddlewareHarness

LOGGER = "strands_trio.events"
TOKEN = "s3cr3t-T0KEN-4f9a"  # must never appear in a record
FIELDS = (
    "event_type",
    "client_id",
    "room_id",
    "remote_addr",
    "outcome",
    "duration_ms",
    "headers",
    "message_length",
    "error",
)


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, capturing the events logger at INFO."""
    caplog.set_level(logging.INFO, LOGGER)
    return caplog


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS}


def assert_no_secret(record: logging.LogRecord) -> None:
    """The token is nowhere: not in the message, its arguments or any attribute."""
    assert TOKEN not in record.getMessage()
    assert TOKEN not in repr(record.args)
    assert TOKEN not in repr(vars(record))


async def test_one_record_per_message_with_its_fields(
    events: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A message gives one record, after its handler, with its fields and the exact virtual
    time the rest of the chain took."""

    async def on_message(message: str, context: Context) -> None:
        assert events.records == []  # nothing is logged before the handler is done
        await trio.sleep(0.25)

    harness = MiddlewareHarness([Logging()], handlers={"on_message": on_message})
    await harness.message("hello", client_id="ann", room_id="lobby")
    (record,) = events.records
    assert record.name == LOGGER
    assert record.levelno == logging.INFO
    assert fields(record) == {
        "event_type": "new_message",
        "client_id": "ann",
        "room_id": "lobby",
        "remote_addr": None,
        "outcome": "ok",
        "duration_ms": 250.0,
        "headers": None,
        "message_length": 5,
        "error": None,
    }
    assert record.getMessage() == "new_message client=ann room=lobby ok 250.00 ms (5 chars)"


async def test_message_text_is_never_logged(events: pytest.LogCaptureFixture) -> None:
    """A message's text (which may carry a token) is logged as its length only."""
    harness = MiddlewareHarness([Logging()])
    text = f'{{"type": "auth", "token": "{TOKEN}"}}'
    await harness.message(text)
    (record,) = events.records
    assert record.message_length == len(text)  # type: ignore[attr-defined]
    assert_no_secret(record)


async def test_connection_request_fields_and_redacted_headers(
    events: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A connection request is logged with its remote address, its answer and its headers,
    the values of sensitive headers replaced whatever the case of their names."""
    harness = MiddlewareHarness([Logging()])
    outcome = await harness.connection_request(
        "/ws/lobby",
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "cookie": f"sid={TOKEN}",
            "X-API-KEY": TOKEN,
            "Proxy-Authorization": f"Basic {TOKEN}",
            "Set-Cookie": [f"a={TOKEN}", f"b={TOKEN}"],
            "X-Trace": ["t1", "t2"],
            "User-Agent": "test",
        },
        remote_addr="10.0.0.7:5123",
    )
    assert outcome.accepted is True
    (record,) = events.records
    client_id = outcome.request.context.client_id  # type: ignore[union-attr]
    assert fields(record) == {
        "event_type": "connection_request",
        "client_id": client_id,
        "room_id": "/ws/lobby",
        "remote_addr": "10.0.0.7:5123",
        "outcome": "accepted",
        "duration_ms": 0.0,
        "headers": {
            "Authorization": "[redacted]",
            "cookie": "[redacted]",
            "X-API-KEY": "[redacted]",
            "Proxy-Authorization": "[redacted]",
            "Set-Cookie": "[redacted]",
            "X-Trace": "t1, t2",
            "User-Agent": "test",
        },
        "message_length": None,
        "error": None,
    }
    assert record.getMessage() == (
        f"connection_request client={client_id} room=/ws/lobby from=10.0.0.7:5123 accepted 0.00 ms"
    )
    assert_no_secret(record)


async def test_headers_of_the_request_are_left_alone(events: pytest.LogCaptureFixture) -> None:
    """Redaction works on a copy: the handler and later middleware see the real headers."""
    seen: list[str | None] = []

    async def admit(request: ConnectionRequestContext) -> bool:
        seen.append(request.header("authorization"))
        return True

    harness = MiddlewareHarness([Logging()], handlers={"on_connection_request": admit})
    outcome = await harness.connection_request(headers={"Authorization": TOKEN})
    assert seen == [TOKEN]
    assert outcome.request is not None
    assert outcome.request.headers["Authorization"] == [TOKEN]
    assert events.records[0].headers["Authorization"] == "[redacted]"  # type: ignore[attr-defined]


async def test_refused_requests(events: pytest.LogCaptureFixture) -> None:
    """A request the handler refuses, or that a middleware stopped without answering, is
    logged as refused."""

    async def refuse(request: ConnectionRequestContext) -> bool:
        return False

    async def stop(ctx: ExecutionContext, call_next: CallNext) -> None:
        return None

    refused = MiddlewareHarness([Logging()], handlers={"on_connection_request": refuse})
    stopped = MiddlewareHarness([Logging(), stop])
    assert (await refused.connection_request()).accepted is False
    assert (await stopped.connection_request()).accepted is False
    assert [r.outcome for r in events.records] == ["refused", "refused"]  # type: ignore[attr-defined]


async def test_an_exception_is_logged_as_error_and_reraised_unchanged(
    events: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """An exception from the chain gives an error record naming its class, but not its
    message, and propagates as the very same object."""
    boom = RuntimeError(f"database said {TOKEN}")

    async def on_message(message: str, context: Context) -> None:
        raise boom

    harness = MiddlewareHarness([Logging()], handlers={"on_message": on_message})
    with pytest.raises(RuntimeError) as caught:
        await harness.message("hi", client_id="ann", room_id="lobby")
    assert caught.value is boom
    (record,) = events.records
    assert (record.outcome, record.error) == ("error", "RuntimeError")  # type: ignore[attr-defined]
    assert record.exc_info is None
    assert record.getMessage() == (
        "new_message client=ann room=lobby error 0.00 ms (2 chars) (RuntimeError)"
    )
    assert_no_secret(record)


async def test_every_event_type(
    events: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """New connections, disconnections and broker errors are logged too, and a broker error's
    text is not."""
    harness = MiddlewareHarness([Logging()])
    await harness.new_connection("ann", room_id="lobby")
    await harness.disconnect("ann", room_id="lobby")
    await harness.error(f"bad frame {TOKEN}", client_id="ann", room_id="lobby")
    assert [(r.event_type, r.client_id, r.outcome) for r in events.records] == [  # type: ignore[attr-defined]
        ("new_connection", "ann", "ok"),
        ("disconnected", "ann", "ok"),
        ("error", "ann", "ok"),
    ]
    assert events.records[1].getMessage() == "disconnected client=ann room=lobby ok 0.00 ms"
    for record in events.records:
        assert_no_secret(record)


async def test_a_query_string_in_a_room_id_is_redacted(events: pytest.LogCaptureFixture) -> None:
    """A room id defaults to the request's path, without its query string (which may carry a
    token); a room id a backend built with one (from an old broker's url) has the query string
    replaced in the record."""
    harness = MiddlewareHarness([Logging()])
    await harness.connection_request(f"/ws/chat?token={TOKEN}")
    await harness.message("hi", room_id=f"/ws/chat?token={TOKEN}")
    rooms = [r.room_id for r in events.records]  # type: ignore[attr-defined]
    assert rooms == ["/ws/chat", "/ws/chat?[redacted]"]
    for record in events.records:
        assert_no_secret(record)


async def test_custom_redact_names_and_level(caplog: pytest.LogCaptureFixture) -> None:
    """The names given are redacted too, in any case, and the defaults stay redacted; records
    have the given level and go to the given logger."""
    caplog.set_level(logging.DEBUG, "myapp.audit")
    harness = MiddlewareHarness([Logging("myapp.audit", level=logging.DEBUG, redact=["X-Session"])])
    await harness.connection_request(
        headers={"x-session": TOKEN, "Authorization": TOKEN, "Accept": "text/plain"}
    )
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("myapp.audit", logging.DEBUG)
    assert record.headers == {  # type: ignore[attr-defined]
        "x-session": "[redacted]",
        "Authorization": "[redacted]",
        "Accept": "text/plain",
    }


class SpyHeaders(dict[str, list[str]]):
    """A header dict that counts how often its items are read."""

    reads = 0

    def items(self) -> Any:
        SpyHeaders.reads += 1
        return super().items()


async def test_disabled_level_reads_and_formats_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the logger is not enabled for the level, nothing is timed, read or emitted: the
    event only goes on through the chain; once enabled, the same spies see the work."""
    caplog.set_level(logging.WARNING, LOGGER)
    now_calls: list[None] = []
    real_now = _logging._now

    def counting_now() -> float:
        now_calls.append(None)
        return real_now()

    monkeypatch.setattr(_logging, "_now", counting_now)

    async def plant(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is EventType.CONNECTION_REQUEST:
            request = ctx.switch_to_connection_request().get_request()
            request.headers = SpyHeaders(request.headers)
        await call_next(ctx)

    logging_mw = Logging()
    harness = MiddlewareHarness([plant, logging_mw])
    SpyHeaders.reads = 0
    outcome = await harness.connection_request(headers={"Authorization": TOKEN})
    assert (outcome.reached, outcome.accepted) == (True, True)
    assert (await harness.message("hi")).reached
    assert (caplog.records, SpyHeaders.reads, now_calls) == ([], 0, [])
    assert logging_mw.statistics() == LoggingStatistics(records=0)

    caplog.set_level(logging.INFO, LOGGER)  # the control: the spies do see an enabled one
    await harness.connection_request(headers={"Authorization": TOKEN})
    assert (len(caplog.records), SpyHeaders.reads, len(now_calls)) == (1, 1, 2)
    assert logging_mw.statistics() == LoggingStatistics(records=1)


async def test_statistics_count_records(events: pytest.LogCaptureFixture) -> None:
    """statistics() counts the records emitted, errors included."""

    async def on_message(message: str, context: Context) -> None:
        if message == "boom":
            raise ValueError(message)

    logging_mw = Logging()
    harness = MiddlewareHarness([logging_mw], handlers={"on_message": on_message})
    await harness.message("ok")
    with pytest.raises(ValueError, match="boom"):
        await harness.message("boom")
    assert logging_mw.statistics() == LoggingStatistics(records=2)
    assert len(events.records) == 2


async def test_logger_instance_and_event_type_filtering(caplog: pytest.LogCaptureFixture) -> None:
    """A Logger object works as well as a name, and event_type compares to EventType."""
    logger = logging.getLogger("myapp.events")
    caplog.set_level(logging.INFO, "myapp.events")
    harness = MiddlewareHarness([Logging(logger)])
    await harness.new_connection()
    assert caplog.records[0].event_type == EventType.NEW_CONNECTION  # type: ignore[attr-defined]
    assert type(caplog.records[0].event_type) is str  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- configuration


def test_default_config() -> None:
    """The defaults: the strands_trio.events logger, INFO, the usual secret headers."""
    config = Logging().config
    assert config.logger is logging.getLogger(LOGGER)
    assert config.level == logging.INFO
    assert config.redact == frozenset(DEFAULT_REDACTED_HEADERS)
    assert LoggingConfig(redact=("X-Token",)).redact == {"x-token", *DEFAULT_REDACTED_HEADERS}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"level": "INFO"}, TypeError, "'level' must be <class 'int'> (got 'INFO'"),
        ({"level": True}, ValueError, "'level' must be an int, not a bool"),
        ({"level": 0}, ValueError, "'level' must be > 0: 0"),
        ({"level": -5}, ValueError, "'level' must be > 0: -5"),
        ({"logger": 42}, TypeError, "logger must be a logging.Logger or a logger name"),
        ({"logger": ""}, ValueError, "logger name must not be empty"),
        ({"redact": "authorization"}, TypeError, "not the string 'authorization'"),
        ({"redact": 5}, TypeError, "redact must be a collection of header names"),
        ({"redact": ["cookie", ""]}, ValueError, "non-empty header names"),
        ({"redact": [b"cookie"]}, ValueError, "non-empty header names"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused when the middleware is made, with a message that names the
    argument and says why."""
    with pytest.raises(error, match=re.escape(match)):
        Logging(**kwargs)


def test_config_is_frozen() -> None:
    """The configuration cannot be changed after the middleware is made."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Logging().config.level = logging.DEBUG  # type: ignore[misc]
