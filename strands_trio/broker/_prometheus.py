"""The Prometheus text exposition format for ``GET /metrics``: each component of the broker
(hub, WebSocket front, backends' port, cluster node) lists its metrics, and ``serve_broker``
renders them together (the broker does not depend on ``prometheus_client``)."""

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


def render(metrics: Iterable[Metric]) -> str:
    """*metrics* in the text format: for each name, ``# HELP`` and ``# TYPE`` once, then one
    line per sample. Several components may report samples of one name (with different
    labels): they are grouped under it, in the order given."""
    grouped: dict[str, tuple[str, str, list[tuple[str, int]]]] = {}
    for name, kind, help_text, samples in metrics:
        entry = grouped.setdefault(name, (kind, help_text, []))
        entry[2].extend(samples)
    lines: list[str] = []
    for name, (kind, help_text, samples) in grouped.items():
        lines.append(f"# HELP strands_broker_{name} {help_text}")
        lines.append(f"# TYPE strands_broker_{name} {kind}")
        lines.extend(f"strands_broker_{name}{labels} {value}" for labels, value in samples)
    return "\n".join(lines) + "\n"
