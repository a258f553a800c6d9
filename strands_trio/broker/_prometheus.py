"""The Prometheus text exposition format for ``GET /metrics``: one renderer for the hub, the
WebSocket front and a cluster node (the broker does not depend on ``prometheus_client``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Metric", "counter", "gauge", "render"]

#: One metric: its name after ``strands_broker_``, its type, its help text, and its samples as
#: (labels such as ``'{reason="full"}'`` or ``""``, value).
Metric = tuple[str, str, str, Sequence[tuple[str, int]]]


def gauge(name: str, help_text: str, value: int) -> Metric:
    """A gauge with one sample."""
    return (name, "gauge", help_text, [("", value)])


def counter(name: str, help_text: str, value: int) -> Metric:
    """A counter with one sample (``_total`` is added to *name*)."""
    return (f"{name}_total", "counter", help_text, [("", value)])


def render(metrics: Iterable[Metric]) -> list[str]:
    """The lines of *metrics*: ``# HELP`` and ``# TYPE``, then one line per sample."""
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP strands_broker_{name} {help_text}")
        lines.append(f"# TYPE strands_broker_{name} {kind}")
        lines.extend(f"strands_broker_{name}{labels} {value}" for labels, value in samples)
    return lines
