"""Replies benchmark: what correlation costs. Round trips per second and latency through our
broker and one StrandsApp, of ``call()``-style correlated messages against plain typed
ping-pong through the same app, side by side in interleaved rounds.

    python benchmarks/replies.py [--quick] [--clients N] [--rounds R] [--duration S]

The load generator (``benchmarks/_wsload.py pingpong``: N picows clients on one uvloop, each
with one message in flight) sends either

- ``typed``: ``{"type":"ping","text":...}``; the route's handler sends
  ``{"type":"pong","text":...}`` to its sender with ``app.send_private_message``: typed
  ping-pong as an app wrote it before replies existed;
- ``call``: ``{"type":"echo","ref":N,"text":...}``, what ``strands.js``'s ``call()`` sends; the
  route's handler returns the same ``Pong`` and the app answers the caller alone with
  ``{"type":"reply","ref":N,"data":{"text":...}}``, the ref read, kept and written back.

Both answers are checked byte for byte. The backend is ``_backends.py replies`` (one app, two
routes on the same model), the broker ``python -m strands_trio broker``; broker on CPU 0,
backend and load generator on CPU 1, fresh processes every run. The table gives the medians
over rounds and each process's CPU time per round trip (the figure a busy machine disturbs
least); the PNG the latency CDF and the throughput bars.
"""

from __future__ import annotations

import argparse
from functools import partial

from _brokers import start_backend, start_strands_broker
from _common import (
    IMAGES,
    WAITING,
    CpuMarks,
    Machine,
    Options,
    Spread,
    bars,
    colors,
    cpu_share,
    interleaved_rounds,
    median_of,
    paired_ratio,
    processes,
    pyplot,
    save_figure,
)
from _loadgen import Round, percentile_ms, pingpong, plot_latencies, problems

LABELS = {
    "typed": "typed ping-pong (send_private_message)",
    "call": "call() with a ref, answered by the return value",
}
BASE = "typed"


def run_round(args: argparse.Namespace, kind: str, label: str) -> Round:
    """One run of *kind* (the load's ``--format``): fresh broker, backend and load."""
    with processes("replies-bench-") as procs:
        cpu = CpuMarks()
        broker = start_strands_broker(procs, max_connections=args.clients + 100)
        backend = start_backend(procs, "replies", broker)
        cpu.watch("broker", broker.proc.pid)
        cpu.watch("backend", backend.pid)
        summary, samples = pingpong(procs, broker.ws_port, args, label, cpu, "--format", kind)
        trouble = problems(summary, args.clients)
        if trouble:
            logs = "\n".join(procs.log(name) for name in ("broker", "backend"))
            raise RuntimeError(f"{kind}: " + "; ".join(trouble) + "\n" + logs)
        procs.report_complaints("broker", "backend")
    return Round(len(samples) / args.duration, samples, cpu.shares())


def rate(r: Round) -> float:
    return r.rate


def p99(r: Round) -> float:
    return r.percentile(0.99)


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(
        f"\nReplies: {args.clients} WebSocket clients in ping-pong through our broker and one "
        f"StrandsApp, {args.duration:g} s timed after {args.warmup:g} s warm-up, "
        f"{args.rounds} interleaved round(s); median of rounds; x typed: the median of each "
        "round's ratio to typed ping-pong in the same round"
    )
    print(
        f"{'contender':50s} {'msg/s':>8s} {'min':>8s} {'max':>8s} {'x typed':>8s} "
        f"{'p50 ms':>7s} {'p99 ms':>7s} {'p99 x typed':>11s}"
    )
    for kind, rounds in results.items():
        rates = Spread.of(r.rate for r in rounds)
        print(
            f"{LABELS[kind]:50s} {rates.median:8,.0f} {rates.low:8,.0f} {rates.high:8,.0f} "
            f"{paired_ratio(results, kind, BASE, rate):8.2f} "
            f"{percentile_ms(rounds, 0.50):7.2f} {percentile_ms(rounds, 0.99):7.2f} "
            f"{paired_ratio(results, kind, BASE, p99):11.2f}"
        )
    print("\nCPU time per round trip (µs), and the share of the window on a CPU / waiting (%)")
    names = ("broker", "backend", "load")
    print(f"{'contender':50s} " + " ".join(f"{name:>18s}" for name in names))
    for kind, rounds in results.items():
        cells = []
        for name in names:
            ran, waited = cpu_share(rounds, name)
            micros = median_of(rounds, lambda r, name=name: r.micros(name))
            cells.append(f"{micros:6.1f} µs {ran:3.0f}/{waited:<3.0f}")
        print(f"{LABELS[kind]:50s} " + " ".join(cells))
    if BASE in results and "call" in results:
        extra = median_of(results["call"], lambda r: r.micros("backend")) - median_of(
            results[BASE], lambda r: r.micros("backend")
        )
        print(f"\nthe backend's extra CPU per call over typed ping-pong: {extra:+.1f} µs")


def plot(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    kinds = list(results)
    color = colors(kinds)
    plot_latencies(left, results, LABELS, color)
    left.set_title(f"Latency CDF, {args.clients} clients, one message in flight each", fontsize=10)
    texts = []
    for kind in kinds:
        ratio = paired_ratio(results, kind, BASE, rate)
        texts.append(f"{median_of(results[kind], rate):,.0f}/s ({ratio:.2f}x)")
    rates = [[r.rate for r in results[kind]] for kind in kinds]
    bars(right, kinds, rates, texts, color=[color[k] for k in kinds])
    right.set_xlabel("round trips per second (median; bars: min to max)")
    right.set_title(f"Throughput, {args.rounds} interleaved round(s); (x typed)", fontsize=10)
    save_figure(fig, args.plot)


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="2 s runs, 1 round")
    options.add("--clients", type=int, default=50, help="WebSocket clients in ping-pong")
    options.add_window()
    options.add_contenders(LABELS, ",".join(LABELS))
    options.add_plot(IMAGES / "replies.png")
    args = options.parse()
    if args.clients < 1:
        options.error("--clients must be at least 1")
    return args


def main() -> None:
    args = parse()
    machine = Machine(", broker pinned to CPU 0, backend and load generator to CPU 1", WAITING)
    results = interleaved_rounds(args.kinds, args.rounds, partial(run_round, args), Round.show)
    machine.report()
    print_table(results, args)
    plot(results, args)


if __name__ == "__main__":
    main()
