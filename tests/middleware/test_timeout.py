"""The timeout middleware: handlers cut at exactly their deadline on the virtual clock, the
HandlerTimeout they raise, and what the client makes of it end to end."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from strands_trio import (
    ConnectionRequestContext,
    Context,
    EventType,
    ExecutionContext,
    StrandsApp,
    StrandsError,
    exception_handler,
    use_middleware,
)
from strands_trio.middleware._logging import Logging
from strands_trio.middleware._metrics import Metrics
from strands_trio.middleware._timeout import (
    HandlerTimeout,
    Timeout,
    TimeoutConfig,
    TimeoutStatistics,
)
from strands_trio.testing import ConnectionRejected, FakeBroker, MiddlewareHarness


def sleeper(seconds: float) -> Any:
    """A message handler that sleeps *seconds*, then notes that it finished."""

    async def on_message(message: str, context: Context) -> None:
        await trio.sleep(seconds)
        finished.append(message)

    finished: list[str] = []
    on_message.finished = finished  # type: ignore[attr-defined]
    return on_message


async def test_slow_handler_is_cut_at_exactly_the_deadline(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A handler still running at the deadline is cancelled at exactly that virtual time, and
    HandlerTimeout is raised, counted and logged without the message text."""
    slow = sleeper(10)
    timeout = Timeout(2)
    harness = MiddlewareHarness(handlers={"on_message": use_middleware(timeout)(slow)})
    start = trio.current_time()
    with pytest.raises(HandlerTimeout) as caught:
        await harness.message("secret text", client_id="ann")
    assert trio.current_time() - start == 2
    assert slow.finished == []
    assert (caught.value.seconds, caught.value.event_type, caught.value.client_id) == (
        2.0,
        EventType.MESSAGE,
        "ann",
    )
    assert str(caught.value) == (
        "the new_message handler for client 'ann' did not finish within 2 s and was cancelled"
    )
    assert timeout.statistics() == TimeoutStatistics(timeouts=1)
    (record,) = [r for r in caplog.records if r.name == "strands_trio.middleware.timeout"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "new_message handler for client ann timed out after 2 s"
    assert "secret text" not in caplog.text


async def test_fast_handler_passes(autojump_clock: trio.testing.MockClock) -> None:
    """A handler that finishes before the deadline runs to the end, untouched and uncounted."""
    fast = sleeper(1.5)
    timeout = Timeout(2)
    harness = MiddlewareHarness([timeout], handlers={"on_message": fast})
    start = trio.current_time()
    assert (await harness.message("hi")).reached
    assert trio.current_time() - start == 1.5
    assert fast.finished == ["hi"]
    assert timeout.statistics() == TimeoutStatistics(timeouts=0)


async def test_deadlines_nest_the_shorter_wins(autojump_clock: trio.testing.MockClock) -> None:
    """An app-wide timeout and a shorter per-handler one: the per-handler one fires first;
    another handler only has the app-wide one."""
    app_wide, own = Timeout(5), Timeout(0.5)

    async def on_new_connection(context: Context) -> None:
        await trio.sleep(60)

    harness = MiddlewareHarness(
        [app_wide],
        handlers={
            "on_message": use_middleware(own)(sleeper(3)),
            "on_new_connection": on_new_connection,
        },
    )
    start = trio.current_time()
    with pytest.raises(HandlerTimeout, match=r"within 0\.5 s"):
        await harness.message("hi")
    assert trio.current_time() - start == 0.5
    with pytest.raises(HandlerTimeout, match=r"new_connection handler .* within 5 s"):
        await harness.new_connection()
    assert trio.current_time() - start == 5.5
    assert (app_wide.statistics().timeouts, own.statistics().timeouts) == (1, 1)


async def test_connection_request_in_the_harness(autojump_clock: trio.testing.MockClock) -> None:
    """In the harness, a request whose chain timed out raises HandlerTimeout out of the job
    (the real client turns that into a rejection, tested end to end below); caught by an
    exception handler, the unanswered request is rejected."""

    async def slow_admit(request: ConnectionRequestContext) -> bool:
        await trio.sleep(30)
        return True

    timeout = Timeout(1)
    bare = MiddlewareHarness([timeout], handlers={"on_connection_request": slow_admit})
    with pytest.raises(HandlerTimeout, match="connection_request handler"):
        await bare.connection_request()

    @exception_handler(HandlerTimeout)
    async def ignore(ctx: ExecutionContext, exc: BaseException) -> None:
        pass

    caught = MiddlewareHarness(
        [timeout], exception_handlers=[ignore], handlers={"on_connection_request": slow_admit}
    )
    outcome = await caught.connection_request()
    assert (outcome.reached, outcome.accepted) == (True, False)
    assert timeout.statistics().timeouts == 2


async def test_exception_handler_can_answer_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app exception handler catches HandlerTimeout (a StrandsError) and tells the client."""

    @exception_handler(StrandsError)
    async def tell(ctx: ExecutionContext, exc: BaseException) -> None:
        assert isinstance(exc, HandlerTimeout)
        await ctx.send_error("timeout", "that took too long")

    harness = MiddlewareHarness(
        [Timeout(1)], exception_handlers=[tell], handlers={"on_message": sleeper(2)}
    )
    await harness.message("hi", client_id="ann")
    ((to, text),) = harness.sent
    assert to == "ann"
    assert json.loads(text)["code"] == "timeout"


async def test_logging_and_metrics_outside_see_an_error(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """Listed after Logging and Metrics, a timeout is an error outcome for both, with the
    duration up to the deadline."""
    caplog.set_level(logging.INFO, "strands_trio.events")
    registry = CollectorRegistry()
    harness = MiddlewareHarness(
        [Logging(), Metrics(registry), Timeout(0.25)], handlers={"on_message": sleeper(1)}
    )
    with pytest.raises(HandlerTimeout):
        await harness.message("hi")
    (record,) = [r for r in caplog.records if r.name == "strands_trio.events"]
    assert (record.outcome, record.error, record.duration_ms) == (  # type: ignore[attr-defined]
        "error",
        "HandlerTimeout",
        250.0,
    )
    labels = {"event_type": "new_message", "outcome": "error"}
    assert registry.get_sample_value("strands_trio_events_total", labels) == 1
    duration = {"event_type": "new_message"}
    assert registry.get_sample_value("strands_trio_event_duration_seconds_sum", duration) == 0.25


# ---------------------------------------------------------------------- end to end


async def test_timed_out_request_is_rejected_and_the_client_goes_on(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Through a real app: a request timed out by @use_middleware(Timeout) is rejected and
    counted as a handler error, a timed-out message handler is a handler error, and the client
    goes on serving the same WebSocket client."""
    app = StrandsApp()

    @app.on_connection_request
    @use_middleware(Timeout(1))
    async def admit(request: ConnectionRequestContext) -> bool:
        if request.header("x-slow"):
            await trio.sleep(30)
        return True

    @app.on_message
    @use_middleware(Timeout(2))
    async def echo(message: str, context: Context) -> None:
        if message == "slow":
            await trio.sleep(30)
        await app.send_private_message(context.client_id, message)

    async with app.connected(connect=broker.open_backend_stream):
        start = trio.current_time()
        with pytest.raises(ConnectionRejected):
            await broker.connect(headers={"X-Slow": "1"})
        assert trio.current_time() - start == 1
        stats = app.statistics()
        assert (stats.requests_rejected, stats.handler_errors) == (1, 1)
        assert stats.requests_timed_out == 0  # our deadline, not the client's request_timeout

        ws = await broker.connect()
        await ws.send("slow")
        await ws.send("after")
        assert await ws.receive() == "after"
        assert trio.current_time() - start == 3
        stats = app.statistics()
        assert (stats.requests_accepted, stats.handler_errors) == (1, 2)


# ---------------------------------------------------------------------- configuration


def test_config() -> None:
    """The deadline is kept as given, in a frozen config."""
    timeout = Timeout(2)
    assert timeout.config == TimeoutConfig(seconds=2)
    assert repr(timeout) == "<Timeout TimeoutConfig(seconds=2)>"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        timeout.config.seconds = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("seconds", "error", "match"),
    [
        (0, ValueError, "'seconds' must be > 0.0: 0"),
        (-1.5, ValueError, "'seconds' must be > 0.0: -1.5"),
        (math.inf, ValueError, "'seconds' must be < inf: inf"),
        (math.nan, ValueError, "'seconds' must be > 0.0: nan"),
        ("2", TypeError, "'seconds' must be (<class 'int'>, <class 'float'>) (got '2'"),
        (True, ValueError, "'seconds' must be a number, not a bool"),
        (None, TypeError, "'seconds' must be (<class 'int'>, <class 'float'>) (got None"),
    ],
)
def test_bad_seconds_are_refused(seconds: Any, error: type[Exception], match: str) -> None:
    """A deadline that is not a positive finite number is refused when the middleware is made,
    with a message that names the argument."""
    with pytest.raises(error, match=re.escape(match)):
        Timeout(seconds)
