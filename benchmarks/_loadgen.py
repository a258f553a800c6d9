"""The driver's side of ``_wsload.py``: a WebSocket load generator started as a process of a
:class:`_common.Processes`, its stdout read line by line until its JSON summary; and
:class:`Round`, one ping-pong run as ``broker.py`` and ``websocket.py`` report it.

A ping-pong load prints ``start`` and ``end`` at the bounds of its timed window; :func:`pingpong`
samples the CPU times of the watched processes (a :class:`_common.CpuMarks`) at those lines, so
that their share of the window can be told.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from _common import (
    HERE,
    NAN2,
    CpuMarks,
    Processes,
    cdf,
    log_ms_axis,
    median_of,
    percentile,
    read_line,
)

WSLOAD = HERE / "_wsload.py"
RUN_MARGIN = 45.0  # seconds a load generator may take beyond its warm-up and duration
#: The figures of a ping-pong summary that must all be zero (or empty) for a run to count.
TROUBLE = ("mismatches", "closed_early", "timed_out", "stuck", "lost", "closes")


def start_wsload(
    procs: Processes,
    name: str,
    mode: str,
    port: int,
    *options: str,
    cpu: int | None = 1,
    nofile: int = 0,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``_wsload.py MODE PORT OPTIONS...`` as *name*, its stdout a pipe to read."""
    command = [sys.executable, str(WSLOAD), mode, str(port), *options]
    return procs.start(
        name, command, cpu=cpu, nofile=nofile, stdout=subprocess.PIPE, stdin=stdin, service=False
    )


def read_summary(
    procs: Processes,
    proc: subprocess.Popen[bytes],
    deadline: float,
    on_line: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, Any]:
    """Read *proc*'s lines until its JSON summary and return it; for each other line, call
    ``on_line[first word]()`` if there is one. Fails if it ends first or *deadline*
    (``time.monotonic()``) passes."""
    actions = on_line or {}
    while True:
        line = read_line(proc, deadline).strip()
        if not line:
            procs.check_alive()  # a dead server says more than the load generator's end
            raise RuntimeError("a load generator exited without a summary")
        if line.startswith("{"):
            return dict(json.loads(line))
        action = actions.get(line.split()[0])
        if action is not None:
            action()


def pingpong(
    procs: Processes,
    port: int,
    args: argparse.Namespace,
    label: str,
    cpu: CpuMarks,
    *options: str,
    name: str = "load",
    margin: float = RUN_MARGIN,
    on_line: Mapping[str, Callable[[], object]] | None = None,
) -> tuple[dict[str, Any], array[float]]:
    """Run ``_wsload.py pingpong`` against *port* as *name* on CPU 1 (``args.clients``,
    ``args.warmup``, ``args.duration``, and the *options*), *cpu* marked at its ``start`` and
    ``end``; its summary and its round-trip times, sorted."""
    out = procs.dir / f"{name}.samples"
    load = start_wsload(
        procs, name, "pingpong", port,
        "--clients", str(args.clients), "--warmup", str(args.warmup),
        "--duration", str(args.duration), "--out", str(out), "--label", label, *options,
    )  # fmt: skip
    cpu.watch(name, load.pid)
    actions: dict[str, Callable[[], object]] = {
        "start": lambda: cpu.mark("start"),
        "end": lambda: cpu.mark("end"),
        **(on_line or {}),
    }
    deadline = time.monotonic() + args.warmup + args.duration + margin
    summary = read_summary(procs, load, deadline, actions)
    load.wait(timeout=10)
    return summary, array("d", sorted(array("d", out.read_bytes())))


def problems(summary: Mapping[str, Any], clients: int, keys: Sequence[str] = TROUBLE) -> list[str]:
    """What went wrong in a ping-pong run, from its summary (nothing: it counts)."""
    found = [f"{key} = {summary[key]}" for key in keys if summary[key]]
    if summary["connected"] != clients:
        failures = ", ".join(summary["connect_failures"])
        found.append(f"{summary['connected']} of {clients} clients connected: {failures}")
    return found


@attrs.frozen
class Round:
    """One ping-pong run."""

    rate: float  # round trips per second
    samples: array[float]  # round-trip times, seconds, sorted
    #: process name -> % of the timed window it ran on a CPU, and waited for one
    cpu: dict[str, tuple[float, float]]

    def percentile(self, q: float) -> float:
        return percentile(self.samples, q)

    def micros(self, name: str) -> float:
        """*name*'s CPU time per round trip, µs."""
        ran = self.cpu.get(name, NAN2)[0]
        return ran / 100 * 1e6 / self.rate if self.rate else float("nan")

    def show(self) -> str:
        """The round's line on stderr."""
        cpu = " ".join(f"{name} {ran:.0f}/{wait:.0f}" for name, (ran, wait) in self.cpu.items())
        return (
            f"{self.rate:10,.0f} msg/s  p99 {self.percentile(0.99) * 1e3:6.2f} ms  "
            f"CPU/wait %: {cpu}"
        )


def percentile_ms(rounds: Sequence[Round], q: float) -> float:
    """The median over rounds of each round's percentile *q*, in ms."""
    return median_of(rounds, lambda r: r.percentile(q)) * 1e3


def plot_latencies(
    ax: Any,
    results: Mapping[str, Sequence[Round]],
    labels: Mapping[str, str],
    colors: Mapping[str, str],
) -> None:
    """Each contender's round-trip times, its rounds pooled, as a CDF on a log axis, with a
    dotted line at its median p99."""
    for kind, rounds in results.items():
        samples = (s * 1e3 for r in rounds for s in r.samples)
        cdf(ax, samples, label=labels.get(kind, kind), color=colors[kind])
        ax.axvline(percentile_ms(rounds, 0.99), color=colors[kind], ls=":", lw=1)
    log_ms_axis(ax, "round-trip latency, ms (log; rounds pooled; dotted: median p99)")
