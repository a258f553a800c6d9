"""The metrics middleware: Prometheus counters and latency histograms of every event.

Theory of operation. :class:`Metrics` lets the event go through the rest of the chain, then
counts it in two metric families of a ``prometheus_client`` registry (the optional extra
``pip install 'strands-trio[metrics]'``):

- ``<namespace>_events_total{event_type, outcome}``, a counter: events by kind and by outcome
  (``ok``; ``accepted`` / ``rejected`` for connection requests; ``error`` when an exception
  passed through, which is re-raised unchanged). The same outcomes as :class:`Logging`.
- ``<namespace>_event_duration_seconds{event_type}``, a histogram of the time spent in the
  rest of the chain, measured with :func:`trio.current_time`, in buckets from 100 µs to 10 s.

Every label combination is created at construction, so each series exists (at zero) from the
start, and the middleware keeps the children's bound ``inc`` / ``observe`` methods in a dict by
event type: an event costs two dict lookups and two calls into ``prometheus_client``, never a
``.labels()`` lookup. The families are registered once per registry and namespace and shared
by every :class:`Metrics` using that pair, so that several apps (or per-handler
``@use_middleware(Metrics())``) in one process do not collide in the global registry.

A cancellation passing through (shutdown, the client's request deadline) is not counted: list
:class:`Timeout` inside :class:`Metrics` to count timeouts as errors.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from attrs.validators import instance_of, matches_re, optional

from strands_trio import CallNext, EventType, ExecutionContext

from ._outcome import OUTCOMES, outcome_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["DURATION_BUCKETS", "Metrics", "MetricsConfig", "MetricsStatistics"]

#: The upper bounds of the duration histogram, in seconds (plus ``+Inf``).
DURATION_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_INSTALL_HINT: Final = "pip install 'strands-trio[metrics]'"
_NAMESPACE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_now = trio.current_time


def _prometheus() -> ModuleType:
    """``prometheus_client``, imported when first needed.

    Raises:
        ImportError: it is not installed; the message says how to install it.
    """
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            f"the Metrics middleware needs prometheus_client: {_INSTALL_HINT}"
        ) from exc
    return prometheus_client


def _check_registry(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # optional(instance_of(CollectorRegistry)), made when first used: the class is only known
    # once prometheus_client (an optional extra) is imported, never at this module's import.
    optional(instance_of(_prometheus().CollectorRegistry))(instance, attribute, value)


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """Where :class:`Metrics` registers its metric families; validated when made.

    The arguments of :class:`Metrics`, as a record: ``attrs.evolve(metrics.config, ...)``
    makes another, and :meth:`Metrics.from_config` a middleware with counters of its own.

    Attributes:
        registry: The registry, or ``None`` for ``prometheus_client``'s global ``REGISTRY``.
        namespace: The prefix of the metric names: a Prometheus name (letters, digits and
            underscores, not starting with a digit).

    Raises:
        ImportError: ``prometheus_client`` is not installed.
        TypeError: *registry* is not a ``CollectorRegistry``, or *namespace* not a string.
        ValueError: *namespace* is not a valid Prometheus name.
    """

    registry: CollectorRegistry | None = attrs.field(default=None, validator=_check_registry)
    namespace: str = attrs.field(
        default="strands_trio", validator=[instance_of(str), matches_re(_NAMESPACE)]
    )


@attrs.frozen(kw_only=True)
class MetricsStatistics:
    """What a :class:`Metrics` middleware has counted (:meth:`Metrics.statistics`), whatever
    other :class:`Metrics` sharing its registry counted.

    Attributes:
        events: Events counted.
        errors: Of those, events an exception passed through.
    """

    events: int
    errors: int


@attrs.frozen
class _Families:
    events: Counter
    duration: Histogram


# One pair of families per registry and namespace, shared by every Metrics using them.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Families]] = (
    weakref.WeakKeyDictionary()
)


def _families(registry: CollectorRegistry, namespace: str) -> _Families:
    by_namespace = _FAMILIES.setdefault(registry, {})
    families = by_namespace.get(namespace)
    if families is None:
        prometheus = _prometheus()
        families = _Families(
            events=prometheus.Counter(
                "events_total",
                "Broker events handled, by event type and outcome.",
                ["event_type", "outcome"],
                namespace=namespace,
                registry=registry,
            ),
            duration=prometheus.Histogram(
                "event_duration_seconds",
                "Time spent handling a broker event, by event type.",
                ["event_type"],
                namespace=namespace,
                registry=registry,
                buckets=DURATION_BUCKETS,
            ),
        )
        by_namespace[namespace] = families
    return families


@attrs.frozen
class _Series:
    """One event type's children: ``count[outcome]()`` and ``observe(seconds)``."""

    count: dict[str, Callable[[], None]]
    observe: Callable[[float], None]


class Metrics:
    """Counts every event and observes its duration in Prometheus metrics.

    List it near the outside, before :class:`Timeout`, so a timeout counts as an error::

        app = StrandsApp(middleware=[Logging(), Metrics(), Timeout(5)])

    Args:
        registry: The ``prometheus_client`` registry to register in; the global one by
            default. Tests pass a fresh ``CollectorRegistry()``.
        namespace: The prefix of the metric names.

    Attributes:
        config: The arguments, frozen and validated (:class:`MetricsConfig`).

    Raises:
        ImportError: ``prometheus_client`` is not installed (``pip install
            'strands-trio[metrics]'``).
        TypeError: *registry* is not a ``CollectorRegistry``, or *namespace* not a string.
        ValueError: *namespace* is not a valid Prometheus name.
    """

    __slots__ = ("_errors", "_events", "_series", "config")

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "strands_trio"
    ) -> None:
        self._start(MetricsConfig(registry=registry, namespace=namespace))

    @classmethod
    def from_config(cls, config: MetricsConfig) -> Metrics:
        """A middleware configured by *config*, with counters of its own (the metric families
        are shared, as between any two :class:`Metrics` on one registry and namespace).

        Raises:
            TypeError: *config* is not a :class:`MetricsConfig`.
        """
        if not isinstance(config, MetricsConfig):
            raise TypeError(f"config must be a MetricsConfig, got {config!r}")
        metrics = cls.__new__(cls)
        metrics._start(config)
        return metrics

    def _start(self, config: MetricsConfig) -> None:
        self.config = config
        registry = _prometheus().REGISTRY if config.registry is None else config.registry
        families = _families(registry, config.namespace)
        self._series: dict[EventType, _Series] = {
            kind: _Series(
                count={
                    outcome: families.events.labels(kind.value, outcome).inc
                    for outcome in OUTCOMES[kind]
                },
                observe=families.duration.labels(kind.value).observe,
            )
            for kind in EventType
        }
        self._events = 0
        self._errors = 0

    def __repr__(self) -> str:
        return f"<Metrics {self.config!r}>"

    def statistics(self) -> MetricsStatistics:
        """What this middleware has counted so far."""
        return MetricsStatistics(events=self._events, errors=self._errors)

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        start = _now()
        try:
            await call_next(ctx)
        except Exception as exc:
            self._errors += 1
            self._record(ctx, start, exc)
            raise
        self._record(ctx, start, None)

    def _record(self, ctx: ExecutionContext, start: float, error: Exception | None) -> None:
        duration = _now() - start
        series = self._series[ctx.get_type()]
        series.count[outcome_of(ctx, error)]()
        series.observe(duration)
        self._events += 1
