"""The metrics middleware: Prometheus counters by event type and outcome, exact duration
histograms on the virtual clock, registries and namespaces, and the outcome shared with the
logging middleware."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import attrs
import prometheus_client
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from strands_trio import (
    CallNext,
    ConnectionRequestContext,
    Context,
    EventType,
    ExecutionContext,
)
from strands_trio.middleware._logging import Logging
from strands_trio.middleware._metrics import (
    DURATION_BUCKETS,
    Metrics,
    MetricsConfig,
    MetricsStatistics,
)
from strands_trio.middleware._outcome import OUTCOMES
from strands_trio.testing import MiddlewareHarness

EVENTS = "strands_trio_events_total"
DURATION = "strands_trio_event_duration_seconds"


def count(registry: CollectorRegistry, event_type: str, outcome: str) -> float | None:
    return registry.get_sample_value(EVENTS, {"event_type": event_type, "outcome": outcome})


def counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every events_total sample that is not zero, by (event_type, outcome)."""
    return {
        (s.labels["event_type"], s.labels["outcome"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == EVENTS and s.value
    }


async def test_events_are_counted_by_type_and_outcome() -> None:
    """Each event is counted once under its type and outcome."""
    registry = CollectorRegistry()
    harness = MiddlewareHarness([Metrics(registry)])
    await harness.message("a")
    await harness.message("b")
    await harness.new_connection()
    await harness.disconnect()
    await harness.error("oops")
    await harness.connection_request()
    assert counts(registry) == {
        ("new_message", "ok"): 2,
        ("new_connection", "ok"): 1,
        ("disconnected", "ok"): 1,
        ("error", "ok"): 1,
        ("connection_request", "accepted"): 1,
    }


async def test_every_series_exists_from_the_start() -> None:
    """All label combinations are created at zero when the middleware is made, so a dashboard
    sees every series before the first event."""
    registry = CollectorRegistry()
    Metrics(registry)
    for kind, outcomes in OUTCOMES.items():
        for outcome in outcomes:
            assert count(registry, kind.value, outcome) == 0
        assert registry.get_sample_value(f"{DURATION}_count", {"event_type": kind.value}) == 0
    assert count(registry, "new_message", "accepted") is None
    assert set(OUTCOMES[EventType.CONNECTION_REQUEST]) == {
        "accepted",
        "refused",
        "rate_limited",
        "error",
    }
    assert set(OUTCOMES[EventType.MESSAGE]) == {
        "ok",
        "forbidden",
        "rate_limited",
        "invalid",
        "error",
    }


async def test_connection_request_outcomes() -> None:
    """Requests are counted as accepted or refused from their final answer, unanswered ones
    as refused, and as errors when an exception passed through."""

    async def admit(request: ConnectionRequestContext) -> bool:
        if request.url == "/ws/boom":
            raise RuntimeError("boom")
        return request.url != "/ws/no"

    async def stop(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.switch_to_connection_request().get_request().url != "/ws/stop":
            await call_next(ctx)

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    harness = MiddlewareHarness([metrics, stop], handlers={"on_connection_request": admit})
    assert (await harness.connection_request("/ws/yes")).accepted is True
    assert (await harness.connection_request("/ws/no")).accepted is False
    assert (await harness.connection_request("/ws/stop")).accepted is False
    with pytest.raises(RuntimeError, match="boom"):
        await harness.connection_request("/ws/boom")
    assert counts(registry) == {
        ("connection_request", "accepted"): 1,
        ("connection_request", "refused"): 2,
        ("connection_request", "error"): 1,
    }
    assert metrics.statistics() == MetricsStatistics(events=4, errors=1)


async def test_an_exception_is_counted_and_reraised_unchanged() -> None:
    """An exception from the chain is counted as an error and propagates as the same object."""
    boom = ValueError("boom")

    async def on_message(message: str, context: Context) -> None:
        raise boom

    registry = CollectorRegistry()
    harness = MiddlewareHarness([Metrics(registry)], handlers={"on_message": on_message})
    with pytest.raises(ValueError, match="boom") as caught:
        await harness.message("hi")
    assert caught.value is boom
    assert counts(registry) == {("new_message", "error"): 1}
    assert registry.get_sample_value(f"{DURATION}_count", {"event_type": "new_message"}) == 1


async def test_durations_are_exact_on_the_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The histogram observes the virtual time the rest of the chain took, in the right
    buckets."""

    async def on_message(message: str, context: Context) -> None:
        await trio.sleep(float(message))

    registry = CollectorRegistry()
    harness = MiddlewareHarness([Metrics(registry)], handlers={"on_message": on_message})
    for seconds in ("0.25", "0.0", "2"):
        await harness.message(seconds)
    labels = {"event_type": "new_message"}

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(f"{DURATION}_bucket", {**labels, "le": le})

    assert registry.get_sample_value(f"{DURATION}_sum", labels) == 2.25
    assert registry.get_sample_value(f"{DURATION}_count", labels) == 3
    assert (bucket("0.0001"), bucket("0.1"), bucket("0.25"), bucket("1.0")) == (1, 1, 2, 2)
    assert (bucket("2.5"), bucket("10.0"), bucket("+Inf")) == (3, 3, 3)


def test_buckets_span_sub_millisecond_to_seconds() -> None:
    """The buckets go from 100 µs to 10 s, in increasing order."""
    assert DURATION_BUCKETS[0] == 0.0001
    assert DURATION_BUCKETS[-1] == 10.0
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))


async def test_namespace_prefixes_the_names() -> None:
    """The namespace is the prefix of both metric names."""
    registry = CollectorRegistry()
    harness = MiddlewareHarness([Metrics(registry, namespace="chat")])
    await harness.message("hi")
    labels = {"event_type": "new_message"}
    assert registry.get_sample_value("chat_events_total", {**labels, "outcome": "ok"}) == 1
    assert registry.get_sample_value("chat_event_duration_seconds_count", labels) == 1
    assert count(registry, "new_message", "ok") is None


async def test_several_metrics_share_a_registry() -> None:
    """Two Metrics on the same registry and namespace (two apps, or one per handler) share the
    metric families instead of colliding, and each counts its own statistics."""
    registry = CollectorRegistry()
    first, second = Metrics(registry), Metrics(registry)
    await MiddlewareHarness([first]).message("a")
    await MiddlewareHarness([second]).message("b")
    assert count(registry, "new_message", "ok") == 2
    assert first.statistics() == second.statistics() == MetricsStatistics(events=1, errors=0)


async def test_default_registry_is_the_global_one() -> None:
    """Without a registry, the metrics go to prometheus_client's global REGISTRY."""
    metrics = Metrics(namespace="strands_trio_test_default")
    assert metrics.config.registry is None
    name, labels = (
        "strands_trio_test_default_events_total",
        {"event_type": "new_message", "outcome": "ok"},
    )
    before = prometheus_client.REGISTRY.get_sample_value(name, labels)
    await MiddlewareHarness([metrics]).message("hi")
    assert prometheus_client.REGISTRY.get_sample_value(name, labels) == (before or 0) + 1


async def test_logging_and_metrics_agree_on_outcomes(caplog: pytest.LogCaptureFixture) -> None:
    """For the same events, the log records' outcomes and the counters are the same (one
    helper computes both)."""
    caplog.set_level(logging.INFO, "strands_trio.events")

    async def admit(request: ConnectionRequestContext) -> bool:
        return request.url == "/ws/yes"

    async def on_message(message: str, context: Context) -> None:
        if message == "boom":
            raise RuntimeError(message)

    registry = CollectorRegistry()
    harness = MiddlewareHarness(
        [Logging(), Metrics(registry)],
        handlers={"on_connection_request": admit, "on_message": on_message},
    )
    await harness.connection_request("/ws/yes")
    await harness.connection_request("/ws/no")
    await harness.message("ok")
    with pytest.raises(RuntimeError):
        await harness.message("boom")
    logged: dict[tuple[str, str], float] = {}
    for record in caplog.records:
        key = (record.event_type, record.outcome)  # type: ignore[attr-defined]
        logged[key] = logged.get(key, 0) + 1
    assert logged == counts(registry)
    assert len(logged) == 4


# ---------------------------------------------------------------------- configuration


def test_config_and_statistics_start_empty() -> None:
    """The frozen config keeps what was given; statistics start at zero."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, namespace="app")
    assert metrics.config == MetricsConfig(registry=registry, namespace="app")
    assert metrics.statistics() == MetricsStatistics(events=0, errors=0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        metrics.config.namespace = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"registry": "default"}, TypeError, "'registry' must be <class 'prometheus_client."),
        ({"namespace": ""}, ValueError, "'namespace' must match regex"),
        ({"namespace": "1app"}, ValueError, "('1app' doesn't)"),
        ({"namespace": "my-app"}, ValueError, "('my-app' doesn't)"),
        ({"namespace": None}, TypeError, "'namespace' must be <class 'str'> (got None"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused when the middleware is made, with a message that names the
    argument and says why."""
    with pytest.raises(error, match=re.escape(match)):
        Metrics(**kwargs)


def test_missing_prometheus_client_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus_client, making a Metrics raises ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'strands-trio\[metrics\]'"):
        Metrics(CollectorRegistry())
