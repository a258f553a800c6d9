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
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path

import attrs
from broker import (
    RUN_MARGIN,
    Processes,
    check_tree,
    cpu_times,
    processes,
    read_line,
    start_backend,
    start_strands_broker,
    two_cpus,
    vm_kib,
)

HERE = Path(__file__).resolve().parent
WSLOAD = HERE / "_wsload.py"
MESSAGE_SIZE = 128 * 1024  # the broker's default max_message_size
HANDLER_SLEEP = 0.005  # seconds the backend's handler takes per message
STRAGGLER = 10.0  # seconds after the window a ping-pong echo may still come
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
    flood: dict[str, object]  # the flooder's summary
    broker_peak_kib: float  # VmHWM (NaN if the process was gone)
    backend_peak_kib: float
    metrics: dict[str, float]  # the METRICS found (a missing family is absent)
    broker_warnings: list[str]
    backend_lost_connections: int
    backend_notes: dict[str, int]  # the backend log's notable lines, numbers masked: count
    cpu: dict[str, tuple[float, float]]  # process -> % of the window on a CPU / waiting

    def percentile(self, q: float) -> float:
        s = self.samples
        return s[min(len(s) - 1, int(q * len(s)))] if s else math.nan


def http_get_text(port: int, path: str) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode() if head.startswith(b"HTTP/1.1 200") else None


def read_metrics(port: int) -> dict[str, float]:
    """The :data:`METRICS` families the broker's ``/metrics`` has, each summed over labels
    (as ``key``), and each non-zero labelled sample apart (as ``key{labels}``)."""
    text = http_get_text(port, "/metrics") or ""
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


def peak_kib(proc: subprocess.Popen[bytes]) -> float:
    try:
        return float(vm_kib(proc.pid, "VmHWM"))
    except (OSError, RuntimeError):
        return math.nan


def start_load(
    procs: Processes, name: str, command: list[str], cpu: int
) -> subprocess.Popen[bytes]:
    return procs.start(
        name, [sys.executable, str(WSLOAD), *command], cpu=cpu, stdout=subprocess.PIPE,
        service=False,
    )  # fmt: skip


def summary_of(proc: subprocess.Popen[bytes], deadline: float, marks: dict[str, object]) -> dict:
    """Read *proc*'s lines until its JSON summary; call ``marks[line]()`` for the others."""
    while True:
        line = read_line(proc, deadline).strip()
        if not line:
            raise RuntimeError("a load generator exited without a summary")
        if line.startswith("{"):
            result: dict[str, object] = json.loads(line)
            return result
        mark = marks.get(line.split()[0])
        if callable(mark):
            mark()


def run_flood(kind: str, args: argparse.Namespace, label: str) -> Run:
    tree = args.previous if kind == "previous" else None
    with processes() as procs:
        broker = start_strands_broker(procs, max_connections=args.clients + 100, tree=tree)
        pending = [str(args.backend_pending)] if args.backend_pending else []
        backend = start_backend(procs, "slow", broker, str(HANDLER_SLEEP), *pending)
        watched = {"broker": broker.proc.pid, "backend": backend.pid}
        out = procs.dir / "samples.bin"
        pingpong = start_load(
            procs, "pingpong",
            ["pingpong", str(broker.ws_port), "--clients", str(args.clients),
             "--warmup", str(args.warmup), "--duration", str(args.duration),
             "--out", str(out), "--label", label, "--straggler", str(STRAGGLER), "--late"],
            cpu=1,
        )  # fmt: skip
        watched["pingpong"] = pingpong.pid
        flooder: list[subprocess.Popen[bytes]] = []

        def start_flooder() -> None:
            # Until the 50's window ends and a little more (it ends by itself).
            seconds = args.warmup + args.duration + 1
            command = ["flood", str(broker.ws_port), "--size", str(MESSAGE_SIZE),
                       "--duration", str(seconds)]  # fmt: skip
            flooder.append(start_load(procs, "flooder", command, cpu=1))
            watched["flooder"] = flooder[0].pid

        samples_at: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}

        def mark(name: str) -> None:
            samples_at[name] = (time.monotonic(), {n: cpu_times(p) for n, p in watched.items()})

        deadline = time.monotonic() + 30 + args.warmup + args.duration + STRAGGLER + RUN_MARGIN
        marks = {
            "connected": start_flooder,
            "start": lambda: mark("start"),
            "end": lambda: mark("end"),
        }
        summary = summary_of(pingpong, deadline, marks)
        flood = summary_of(flooder[0], deadline, {}) if flooder else {"sent": 0}
        pingpong.wait(timeout=10)
        broker_peak, backend_peak = peak_kib(broker.proc), peak_kib(backend)
        metrics = read_metrics(broker.ws_port)
        gone = [
            n for n, p in (("broker", broker.proc), ("backend", backend)) if p.poll() is not None
        ]
        if gone:
            print(f"  {label}: {', '.join(gone)} exited", file=sys.stderr)
        broker_warnings = procs.complaints("broker")
        backend_lost = sum(bool(BACKEND_LOST.search(line)) for line in procs.complaints("backend"))
        backend_notes = notable_lines(procs.dir / "backend.log")
        procs.report_complaints("broker")
        samples = array("d", sorted(array("d", out.read_bytes())))
    if summary["connected"] != args.clients:
        raise RuntimeError(f"{label}: {summary['connected']} of {args.clients} connected: "
                           f"{summary['connect_failures']}")  # fmt: skip
    cpu: dict[str, tuple[float, float]] = {}
    if "start" in samples_at and "end" in samples_at:
        (t0, before), (t1, after) = samples_at["start"], samples_at["end"]
        for name in after:
            if name in before:
                (r0, w0), (r1, w1) = before[name], after[name]
                cpu[name] = (100 * (r1 - r0) / (t1 - t0), 100 * (w1 - w0) / (t1 - t0))
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
        cpu=cpu,
    )


def show(kind: str, run: Run, label: str) -> None:
    flood = run.flood
    print(
        f"{label}: the 50: {run.rate:,.0f} round trips/s, p50 {run.percentile(0.5) * 1e3:.1f} ms"
        f", p99 {run.percentile(0.99) * 1e3:.1f} ms, sent {run.sent:,}, echoed {run.received:,}"
        f", lost {run.lost}, closed {run.closed_count}; flooder sent {flood.get('sent', 0):,}, "
        f"got back {flood.get('received', 0):,} ({flood.get('ended')}"
        + (f" {flood.get('close_code')} {flood.get('close_reason')}" if flood.get("close_code")
           else "")
        + f"); peak MiB broker {run.broker_peak_kib / 1024:.0f}, backend "
        f"{run.backend_peak_kib / 1024:.0f}; metrics {run.metrics}",
        file=sys.stderr,
    )  # fmt: skip


# ---------------------------------------------------------------------- report


def med(runs: list[Run], value: object) -> float:
    values = [value(r) for r in runs]  # type: ignore[operator]
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def metric(runs: list[Run], key: str) -> str:
    """*key* from the last run's metrics, summed over runs, or ``n/a``."""
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
            f"{LABELS[kind]:18s} {med(runs, lambda r: r.rate):7,.0f} "
            f"{med(runs, lambda r: r.percentile(0.5)) * 1e3:8.1f} "
            f"{med(runs, lambda r: r.percentile(0.99)) * 1e3:8.1f} "
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
        through = med(runs, lambda r: int(r.flood.get("received", 0)) / r.flood.get("seconds", 1))
        print(
            f"{LABELS[kind]:18s} {sum(int(f.get('sent', 0)) for f in floods):7,} "
            f"{sum(int(f.get('received', 0)) for f in floods):7,} {through:6.0f} "
            f"{med(runs, lambda r: r.broker_peak_kib) / 1024:10.0f} "
            f"{med(runs, lambda r: r.backend_peak_kib) / 1024:11.0f} "
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
            ran = med(runs, lambda r, n=name: r.cpu.get(n, (math.nan, math.nan))[0])
            waited = med(runs, lambda r, n=name: r.cpu.get(n, (math.nan, math.nan))[1])
            cells.append(f"{ran:5.0f}/{waited:<4.0f}")
        print(f"{LABELS[kind]:18s} " + " ".join(cells))
    for kind, runs in results.items():
        lost = sum(r.lost for r in runs)
        closed = sum(r.closed_count for r in runs)
        verdict = "met" if lost == 0 and closed == 0 else "NOT met"
        print(
            f"\n{LABELS[kind]}: the 50 lost {lost} message(s), {closed} closed "
            f"(target: 0): {verdict}"
        )
        warnings = sorted({line.split("] ")[-1][:140] for r in runs for line in r.broker_warnings})
        for line in warnings[:4]:
            print(f"  broker log: {line}")
        labelled: dict[str, float] = {}
        for r in runs:
            for key, value in r.metrics.items():
                if "{" in key:
                    labelled[key] = labelled.get(key, 0.0) + value
        if labelled:
            counters = ", ".join(f"{key} {value:,.0f}" for key, value in sorted(labelled.items()))
            print(f"  /metrics at the end, summed over rounds: {counters}")
        lost_links = sum(r.backend_lost_connections for r in runs)
        if lost_links:
            print(f"  the backend lost its connection to the broker {lost_links} time(s)")
        notes: dict[str, int] = {}
        for r in runs:
            for line, count in r.backend_notes.items():
                notes[line] = notes.get(line, 0) + count
        for line, count in sorted(notes.items(), key=lambda item: -item[1])[:4]:
            print(f"  backend log ({count}x): {line}")


def plot(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, memory, through) = plt.subplots(1, 3, figsize=(14, 4.2))
    kinds = list(results)
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for kind in kinds:
        ordered = sorted(s * 1e3 for r in results[kind] for s in r.samples)
        if not ordered:
            continue
        n, stride = len(ordered), max(1, len(ordered) // 2000)
        cdf.plot(
            [*ordered[::stride], ordered[-1]], [*(i / n for i in range(0, n, stride)), 1.0],
            label=LABELS[kind], color=colors[kind],
        )  # fmt: skip
    cdf.set_xscale("log")
    cdf.set_xlabel("round trip of the 50, ms (log; rounds pooled)")
    cdf.set_ylabel("fraction of round trips")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    cdf.set_title(f"{args.clients} ping-pong clients beside a {MESSAGE_SIZE // 1024} KiB flood",
                  fontsize=10)  # fmt: skip
    width = 0.38
    for i, kind in enumerate(kinds):
        values = [med(results[kind], lambda r: r.broker_peak_kib) / 1024,
                  med(results[kind], lambda r: r.backend_peak_kib) / 1024]  # fmt: skip
        bars = memory.bar([x + i * width for x in (0, 1)], values, width, label=LABELS[kind],
                          color=colors[kind])  # fmt: skip
        memory.bar_label(bars, fmt="%.0f", fontsize=8)
    memory.set_xticks([width / 2, 1 + width / 2], ["broker", "backend"])
    memory.set_ylabel("peak resident memory (VmHWM), MiB")
    memory.legend(fontsize=8)
    memory.set_title("Peak memory (median of rounds)", fontsize=10)
    lost = [sum(r.lost for r in results[k]) for k in kinds]
    flood = [med(results[k], lambda r: int(r.flood.get("received", 0)) / r.flood.get("seconds", 1))
             for k in kinds]  # fmt: skip
    rates = [med(results[k], lambda r: r.rate) for k in kinds]
    labels = [LABELS[k] for k in kinds]
    bars = through.barh(labels, rates, color=[colors[k] for k in kinds])
    for bar, rate, flooded, lost_n in zip(bars, rates, flood, lost, strict=True):
        through.text(
            rate * 1.02, bar.get_y() + bar.get_height() / 2,
            f"{rate:,.0f} rt/s; flooder {flooded:.0f} msg/s; lost {lost_n}", va="center",
            fontsize=8,
        )  # fmt: skip
    through.invert_yaxis()
    through.set_xlim(0, max([*rates, 1]) * 2.2)
    through.set_xlabel("the 50's round trips per second (median)")
    through.set_title("Throughput of the 50, the flooder's, and losses", fontsize=10)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="ping-pong clients")
    parser.add_argument(
        "--previous", type=Path, help="a source tree whose broker to compare (default: none)"
    )
    parser.add_argument("--duration", type=float, help="timed seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds before timing (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--backend-pending", type=int,
        help="the backend's max_pending_events (default: StrandsClient's, 1024)",
    )  # fmt: skip
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "flood.png")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    args = parser.parse_args()
    quick = {"warmup": 1.0, "duration": 3.0, "rounds": 1}
    full = {"warmup": 2.0, "duration": 10.0, "rounds": 3}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--clients, --duration and --rounds must be positive, --warmup >= 0")
    if args.previous is not None:
        check_tree(args.previous)
    if not two_cpus():
        print("one CPU: processes are not pinned", file=sys.stderr)
    kinds = ["current", "previous"] if args.previous else ["current"]
    load_before = os.getloadavg()[0]
    results: dict[str, list[Run]] = {kind: [] for kind in kinds}
    for round_no in range(1, args.rounds + 1):
        for kind in kinds:
            label = f"{kind} {round_no}/{args.rounds}"
            run = run_flood(kind, args, label)
            show(kind, run, label)
            results[kind].append(run)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinning = ", the broker pinned to CPU 0, the rest to CPU 1" if two_cpus() else ""
    print(
        f"\n{cpus} CPU(s){pinning}; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print_table(results, args)
    plot(results, args)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
