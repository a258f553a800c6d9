"""Flood benchmark: one WebSocket client sending maximum-size messages as fast as the broker
takes them while 50 others ping-pong, all through the broker to a slow backend; on our broker
and, with ``--previous``, on the broker of another source tree, in interleaved rounds.

    python benchmarks/flood.py --previous /work/prev            # full run (about 3 minutes)
    python benchmarks/flood.py --previous /work/prev --quick    # a smoke run (under a minute)

Each run is a fresh set of processes: the broker (``python -m strands_trio broker``, pinned to
CPU 0); a backend whose handler sleeps 5 ms before echoing each message to its sender
(``_backends.py slow``: ``StrandsClient``, which runs one client's events in order and
different clients' concurrently, and reconnects within a second if the broker drops it); 50
ping-pong clients (``_wsload.py pingpong``: each sends a message, waits for its echo, sends
the next); and, once those are connected, the flooder (``_wsload.py flood``: 128 KiB text
messages, the broker's default ``max_message_size``, sent as fast as TCP takes them, the
echoes read and discarded). The load generators and the backend are pinned to CPU 1.

Reported per contender (medians over rounds; losses and closes summed over rounds):

- the 50: round trips per second and p50/p99 in the timed window; messages sent and echoes
  received over the whole run, a message still unanswered 10 s after the window being lost
  (must be 0), and clients the broker closed;
- the flooder: messages sent, echoes it got back (what went all the way through), and how it
  ended (the broker's close code, if it closed it);
- the peak resident memory (``VmHWM``) of the broker and of the backend;
- the broker's ``/metrics`` at the end: ``strands_broker_events_lost_total`` and
  ``strands_broker_messages_lost_total`` (the current broker's; the previous one has neither
  and says ``n/a``), the backends it dropped as stalled, the pauses of its flow control;
- what the broker and the backend logged as warnings (the backend's lost connections).

The previous broker is expected to drop the backend as stalled and lose messages: that is
reported, not a failure of the benchmark.

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from array import array
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from _brokers import add_previous, http_get, start_backend, start_strands_broker
from _common import (
    RESULTS,
    CpuMarks,
    Machine,
    Options,
    bars,
    cdf,
    colors,
    cpu_share,
    interleaved_rounds,
    log_ms_axis,
    median_of,
    note,
    peak_kib,
    percentile,
    processes,
    pyplot,
    save_figure,
)
from _loadgen import RUN_MARGIN, pingpong, problems, read_summary, start_wsload

MESSAGE_SIZE = 128 * 1024  # the broker's default max_message_size
HANDLER_SLEEP = 0.005  # seconds the backend's handler takes per message
STRAGGLER = 10.0  # seconds after the window a ping-pong echo may still come
CONNECT_MARGIN = 30.0  # seconds for the 50 to connect
LABELS = {"current": "current broker", "previous": "previous broker"}
#: The ``/metrics`` families read at the end (summed over their labels).
METRICS = {
    "events_lost": "strands_broker_events_lost_total",
    "messages_lost": "strands_broker_messages_lost_total",
    "stalled": "strands_broker_backends_stalled_total",
    "flow_pauses": "strands_broker_flow_pauses_total",
    "slow_closed": "strands_broker_ws_slow_clients_closed_total",
    "messages_in": "strands_broker_messages_in_total",
}
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)
BACKEND_LOST = re.compile(r"connection to the broker at .* lost")
#: A line worth reporting from a log: a warning, or the last line of a traceback.
NOTABLE = re.compile(r"WARNING|ERROR|^[A-Za-z_.]*(Error|Exception|Group)\b")
VARYING = re.compile(r"[0-9]+(\.[0-9]+)*|#\d+|'[^']*'")


@attrs.frozen
class Run:
    """One run of one contender."""

    rate: float  # the 50's round trips per second in the window
    #: the round-trip times of the messages they sent in the window, seconds, sorted (those
    #: answered after it included: a stall at the end counts)
    samples: array[float]
    sent: int  # the 50's messages, warm-up included
    received: int  # and their echoes
    lost: int  # unanswered at the end
    closed: list[str]  # the broker's closes of the 50 (first few reasons)
    closed_count: int
    flood: dict[str, Any]  # the flooder's summary
    broker_peak_kib: float  # VmHWM (NaN if the process was gone)
    backend_peak_kib: float
    metrics: dict[str, float]  # the METRICS found (a missing family is absent)
    broker_warnings: list[str]
    backend_lost_connections: int
    backend_notes: dict[str, int]  # the backend log's notable lines, numbers masked: count
    cpu: dict[str, tuple[float, float]]  # process -> % of the window on a CPU / waiting

    def percentile(self, q: float) -> float:
        return percentile(self.samples, q)

    @property
    def flooded(self) -> float:
        """The flooder's echoes per second."""
        return int(self.flood.get("received", 0)) / float(self.flood.get("seconds", 1))

    def show(self) -> str:
        """The run's line on stderr."""
        flood = self.flood
        closed = (
            f" {flood['close_code']} {flood.get('close_reason')}" if flood.get("close_code") else ""
        )
        return (
            f"the 50: {self.rate:,.0f} round trips/s, p50 {self.percentile(0.5) * 1e3:.1f} ms, "
            f"p99 {self.percentile(0.99) * 1e3:.1f} ms, sent {self.sent:,}, echoed "
            f"{self.received:,}, lost {self.lost}, closed {self.closed_count}; flooder sent "
            f"{flood.get('sent', 0):,}, got back {flood.get('received', 0):,} "
            f"({flood.get('ended')}{closed}); peak MiB broker {self.broker_peak_kib / 1024:.0f}, "
            f"backend {self.backend_peak_kib / 1024:.0f}; metrics {self.metrics}"
        )


def read_metrics(port: int) -> dict[str, float]:
    """The :data:`METRICS` families the broker's ``/metrics`` has, each summed over labels
    (as ``key``), and each non-zero labelled sample apart (as ``key{labels}``)."""
    text = http_get(port, "/metrics") or ""
    keys = {family: key for key, family in METRICS.items()}
    found: dict[str, float] = {}
    for name, labels, value in SAMPLE.findall(text):
        if name in keys:
            key = keys[name]
            found[key] = found.get(key, 0.0) + float(value)
            if labels and float(value):
                found[key + labels] = float(value)
    return found


def notable_lines(log: Path) -> dict[str, int]:
    """The warnings and exceptions in *log*, numbers masked, with how often each came."""
    counts: dict[str, int] = {}
    text = log.read_bytes().decode(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if NOTABLE.search(line):
            key = VARYING.sub("N", line.split(" WARNING ")[-1])[:150]
            counts[key] = counts.get(key, 0) + 1
    return counts


def run_flood(args: argparse.Namespace, kind: str, label: str) -> Run:
    """One run of *kind*: fresh processes; the 50's ping-pong, the flooder once they are
    connected."""
    tree = args.previous if kind == "previous" else None
    with processes("flood-bench-") as procs:
        broker = start_strands_broker(procs, max_connections=args.clients + 100, tree=tree)
        pending = [str(args.backend_pending)] if args.backend_pending else []
        backend = start_backend(procs, "slow", broker, str(HANDLER_SLEEP), *pending)
        cpu = CpuMarks({"broker": broker.proc.pid, "backend": backend.pid})
        flooder: list[subprocess.Popen[bytes]] = []

        def start_flooder() -> None:
            # Until the 50's window ends and a little more (it ends by itself).
            seconds = args.warmup + args.duration + 1
            flooder.append(
                start_wsload(
                    procs, "flooder", "flood", broker.ws_port,
                    "--size", str(MESSAGE_SIZE), "--duration", str(seconds),
                )
            )  # fmt: skip
            cpu.watch("flooder", flooder[0].pid)

        summary, samples = pingpong(
            procs, broker.ws_port, args, label, cpu, "--straggler", str(STRAGGLER), "--late",
            name="pingpong", margin=CONNECT_MARGIN + STRAGGLER + RUN_MARGIN,
            on_line={"connected": start_flooder},
        )  # fmt: skip
        deadline = time.monotonic() + CONNECT_MARGIN + RUN_MARGIN
        flood = read_summary(procs, flooder[0], deadline) if flooder else {"sent": 0}
        broker_peak, backend_peak = peak_kib(broker.proc.pid), peak_kib(backend.pid)
        metrics = read_metrics(broker.ws_port)
        gone = [
            n for n, p in (("broker", broker.proc), ("backend", backend)) if p.poll() is not None
        ]
        if gone:
            note(f"  {label}: {', '.join(gone)} exited")
        broker_warnings = procs.complaints("broker")
        backend_lost = sum(bool(BACKEND_LOST.search(line)) for line in procs.complaints("backend"))
        backend_notes = notable_lines(procs.dir / "backend.log")
        procs.report_complaints("broker")
    trouble = problems(summary, args.clients, keys=())
    if trouble:
        raise RuntimeError(f"{label}: " + "; ".join(trouble))
    return Run(
        rate=int(summary["round_trips"]) / args.duration,
        samples=samples,
        sent=int(summary["sent"]),
        received=int(summary["received"]),
        lost=int(summary["lost"]),
        closed=list(summary["closes"]),
        closed_count=int(summary["closed_early"]),
        flood=flood,
        broker_peak_kib=broker_peak,
        backend_peak_kib=backend_peak,
        metrics=metrics,
        broker_warnings=broker_warnings,
        backend_lost_connections=backend_lost,
        backend_notes=backend_notes,
        cpu=cpu.shares(),
    )


# ---------------------------------------------------------------------- report


def metric(runs: list[Run], key: str) -> str:
    """*key* from the runs' metrics, summed over runs, or ``n/a``."""
    if any(key not in r.metrics for r in runs):
        return "n/a"
    return f"{sum(r.metrics[key] for r in runs):,.0f}"


def print_table(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    rounds = len(next(iter(results.values())))
    print(
        f"\nFlood: 1 client sending {MESSAGE_SIZE // 1024} KiB messages while {args.clients} "
        f"others ping-pong, through the broker to a backend whose handler takes "
        f"{HANDLER_SLEEP * 1e3:g} ms per message (max_pending_events "
        f"{args.backend_pending or 'default'}); {args.duration:g} s timed after "
        f"{args.warmup:g} s warm-up, {rounds} interleaved round(s); medians of rounds, counts "
        "summed over rounds"
    )
    print("\nThe 50 ping-pong clients")
    print(
        f"{'contender':18s} {'rt/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'sent':>9s} "
        f"{'echoed':>9s} {'lost':>6s} {'closed':>6s}  closes"
    )
    for kind, runs in results.items():
        closes = sorted({c for r in runs for c in r.closed})
        print(
            f"{LABELS[kind]:18s} {median_of(runs, lambda r: r.rate):7,.0f} "
            f"{median_of(runs, lambda r: r.percentile(0.5)) * 1e3:8.1f} "
            f"{median_of(runs, lambda r: r.percentile(0.99)) * 1e3:8.1f} "
            f"{sum(r.sent for r in runs):9,} {sum(r.received for r in runs):9,} "
            f"{sum(r.lost for r in runs):6,} {sum(r.closed_count for r in runs):6,}  "
            f"{'; '.join(closes[:2]) or '-'}"
        )
    print("\nThe flooder, memory, the broker's counters at the end")
    print(
        f"{'contender':18s} {'sent':>7s} {'echoed':>7s} {'msg/s':>6s} {'broker MiB':>10s} "
        f"{'backend MiB':>11s} {'events lost':>11s} {'msgs lost':>9s} {'stalled':>7s} "
        f"{'pauses':>7s} {'warnings':>8s}  ended"
    )
    for kind, runs in results.items():
        floods = [r.flood for r in runs]
        ended = sorted({f"{f.get('ended')} {f.get('close_code') or ''}".strip() for f in floods})
        print(
            f"{LABELS[kind]:18s} {sum(int(f.get('sent', 0)) for f in floods):7,} "
            f"{sum(int(f.get('received', 0)) for f in floods):7,} "
            f"{median_of(runs, lambda r: r.flooded):6.0f} "
            f"{median_of(runs, lambda r: r.broker_peak_kib) / 1024:10.0f} "
            f"{median_of(runs, lambda r: r.backend_peak_kib) / 1024:11.0f} "
            f"{metric(runs, 'events_lost'):>11s} {metric(runs, 'messages_lost'):>9s} "
            f"{metric(runs, 'stalled'):>7s} {metric(runs, 'flow_pauses'):>7s} "
            f"{sum(len(r.broker_warnings) for r in runs):8,}  {', '.join(ended)}"
        )
    print(
        "(sent/echoed: over all rounds; msg/s: the flooder's echoes per second; MiB: peak "
        "resident memory, VmHWM; events lost: events for the backend never written; msgs lost: "
        "messages for clients never written; stalled: backends dropped for not reading; "
        "pauses: the flow control's pauses of clients)"
    )
    print("\nCPU share of the timed window (% on a CPU / waiting for one), medians")
    names = ("broker", "backend", "pingpong", "flooder")
    print(f"{'contender':18s} " + " ".join(f"{n:>10s}" for n in names))
    for kind, runs in results.items():
        cells = []
        for name in names:
            ran, waited = cpu_share(runs, name)
            cells.append(f"{ran:5.0f}/{waited:<4.0f}")
        print(f"{LABELS[kind]:18s} " + " ".join(cells))
    for kind, runs in results.items():
        print_verdict(kind, runs)


def summed(runs: list[Run], counts: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    """The *counts* of each run, added up key by key."""
    total: dict[str, Any] = {}
    for r in runs:
        for key, value in counts(r).items():
            total[key] = total.get(key, 0) + value
    return total


def print_verdict(kind: str, runs: list[Run]) -> None:
    lost = sum(r.lost for r in runs)
    closed = sum(r.closed_count for r in runs)
    verdict = "met" if lost == 0 and closed == 0 else "NOT met"
    print(
        f"\n{LABELS[kind]}: the 50 lost {lost} message(s), {closed} closed (target: 0): {verdict}"
    )
    warnings = sorted({line.split("] ")[-1][:140] for r in runs for line in r.broker_warnings})
    for line in warnings[:4]:
        print(f"  broker log: {line}")
    labelled = summed(runs, lambda r: {k: v for k, v in r.metrics.items() if "{" in k})
    if labelled:
        counters = ", ".join(f"{key} {value:,.0f}" for key, value in sorted(labelled.items()))
        print(f"  /metrics at the end, summed over rounds: {counters}")
    lost_links = sum(r.backend_lost_connections for r in runs)
    if lost_links:
        print(f"  the backend lost its connection to the broker {lost_links} time(s)")
    notes = summed(runs, lambda r: r.backend_notes)
    for line, count in sorted(notes.items(), key=lambda item: -item[1])[:4]:
        print(f"  backend log ({count}x): {line}")


def plot(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    plt = pyplot()
    fig, (left, memory, through) = plt.subplots(1, 3, figsize=(14, 4.2))
    kinds = list(results)
    color = colors(kinds)
    for kind in kinds:
        cdf(left, (s * 1e3 for r in results[kind] for s in r.samples), label=LABELS[kind],
            color=color[kind])  # fmt: skip
    log_ms_axis(left, "round trip of the 50, ms (log; rounds pooled)")
    left.set_title(
        f"{args.clients} ping-pong clients beside a {MESSAGE_SIZE // 1024} KiB flood", fontsize=10
    )
    width = 0.38
    for i, kind in enumerate(kinds):
        values = [
            median_of(results[kind], lambda r: r.broker_peak_kib) / 1024,
            median_of(results[kind], lambda r: r.backend_peak_kib) / 1024,
        ]
        drawn = memory.bar(
            [x + i * width for x in (0, 1)], values, width, label=LABELS[kind], color=color[kind]
        )
        memory.bar_label(drawn, fmt="%.0f", fontsize=8)
    memory.set_xticks([width / 2, 1 + width / 2], ["broker", "backend"])
    memory.set_ylabel("peak resident memory (VmHWM), MiB")
    memory.legend(fontsize=8)
    memory.set_title("Peak memory (median of rounds)", fontsize=10)
    rates = [[median_of(results[k], lambda r: r.rate)] for k in kinds]
    texts = [
        f"{rate:,.0f} rt/s; flooder {median_of(results[k], lambda r: r.flooded):.0f} msg/s; "
        f"lost {sum(r.lost for r in results[k])}"
        for k, [rate] in zip(kinds, rates, strict=True)
    ]
    bars(through, [LABELS[k] for k in kinds], rates, texts, color=[color[k] for k in kinds],
         room=2.2, fontsize=8)  # fmt: skip
    through.set_xlabel("the 50's round trips per second (median)")
    through.set_title("Throughput of the 50, the flooder's, and losses", fontsize=10)
    save_figure(fig, args.plot)


# ---------------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="3 s runs, 1 round")
    options.add("--clients", type=int, default=50, help="ping-pong clients")
    add_previous(options)
    options.add_window(duration=(10.0, 3.0), warmup=(2.0, 1.0))
    options.add(
        "--backend-pending", type=int,
        help="the backend's max_pending_events (default: StrandsClient's, 1024)",
    )  # fmt: skip
    options.add_plot(RESULTS / "flood.png")
    args = options.parse()
    if args.clients < 1:
        options.error("--clients must be at least 1")
    return args


def main() -> None:
    args = parse()
    kinds = ["current", "previous"] if args.previous else ["current"]
    machine = Machine(", the broker pinned to CPU 0, the rest to CPU 1")
    results = interleaved_rounds(kinds, args.rounds, partial(run_flood, args), Run.show)
    machine.report()
    print_table(results, args)
    plot(results, args)


if __name__ == "__main__":
    main()
