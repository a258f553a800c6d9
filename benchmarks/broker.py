"""Broker benchmark: WebSocket ping-pong through the broker and an echo backend, end to end,
against the bare WebSocket adapter it is built on; and the broker's resident memory per idle
WebSocket connection.

    python benchmarks/broker.py                          # full run (about 6 minutes)
    python benchmarks/broker.py --quick                  # a smoke run (about a minute)
    python benchmarks/broker.py --previous /work/prev    # also the broker of another tree
    python benchmarks/broker.py --reference-binary PATH  # also the reference Go broker

Ping-pong: a load-generator process (``benchmarks/_wsload.py pingpong``: N picows clients on
uvloop, a compiled WebSocket core) opens N WebSocket clients; each sends a message, waits for
its echo, records the round trip and sends the next, for a fixed duration after a short
warm-up. Contenders, each as separate processes, in interleaved rounds (the machine is shared
and noisy; the median is reported):

- ``adapter``: the ceiling: a bare echo server on the broker's own WebSocket adapter
  (``_servers.py adapter``: ``strands_trio.broker._connection`` driven as the broker drives
  it, each message echoed with ``deliver`` and ``flush``): no hub, no backend;
- ``strands``: our broker (``python -m strands_trio broker``) + a ``StrandsClient`` backend
  that answers each ``new_message`` with ``send_private_message`` to its sender;
- ``previous``: the broker of another source tree (``--previous DIR``, run with
  ``PYTHONPATH=DIR`` from that directory: the broker before a change) + the same backend;
- ``raw``: our broker + a blocking socket loop with orjson and no framework
  (``_backends.py raw-broker``): the backend's cost almost removed, what the broker alone allows;
- ``pystrands``: our broker + the same backend written with the asyncio ``pystrands`` client;
- ``ws-echo``: a trio-websocket echo server (``_servers.py trio-websocket``);
- ``adapter-deflate``: the ``adapter`` echo with permessage-deflate (``compression=True``),
  the clients offering it (``_wsload.py pingpong --deflate``): what compression costs;
- ``strands-deflate``: ``strands`` with the broker started with ``--compression``, the clients
  offering permessage-deflate;
- ``reference``: the reference Go broker (``--reference-binary``; ``PYSTRAND_WS_PORT`` and
  ``PYSTRAND_TCP_PORT``) + the ``StrandsClient`` backend (``reference-pystrands``: with the
  pystrands one).

The targets: ``strands`` >= 0.75x the ``adapter`` echo's round trips per second, with a p99 at
most 1.5x the ``adapter``'s (the verdict line says whether they are met).

With two CPUs the broker (or the echo server) is pinned to CPU 0, the backend and the load
generator to CPU 1. For each process the share of the timed window it spent on a CPU and
waiting for one (``/proc/PID/task/*/schedstat``) is reported too: the first says which process
is the bottleneck, the second how much the machine's other work got in the way. The load
generator's own share is reported apart: a load generator near 100 % would be the
bottleneck, and the figures of that row its ceiling, not the server's.

Memory: a broker and an accepting backend; the broker's VmRSS is read, 3,000 idle WebSocket
connections are opened from a load-generator process (``_wsload.py idle``), the broker's
``/healthz`` is polled until it counts them, VmRSS is read again: (after - before) / 3,000.
Then a second batch as large (``--batches``: more), once the first has closed: its VmRSS
shows a leak, if any. For
our broker, and for the ``--previous`` one when given. Target: at most 15 KiB per connection.

Prints a table and writes a PNG plot of the latency distribution (``--plot``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from functools import partial

from _brokers import (
    Broker,
    add_previous,
    start_backend,
    start_echo_server,
    start_reference_broker,
    start_strands_broker,
)
from _common import (
    NAN2,
    RESULTS,
    WAITING,
    CpuMarks,
    Machine,
    Options,
    Processes,
    Spread,
    bars,
    colors,
    cpu_share,
    interleaved_rounds,
    median_of,
    note,
    paired_ratio,
    processes,
    pyplot,
    save_figure,
)
from _loadgen import Round, percentile_ms, pingpong, plot_latencies, problems
from _memory import Memory, measure_memory, print_memory

LABELS = {
    "adapter": "adapter echo (ceiling)",
    "strands": "strands-trio broker + StrandsClient",
    "previous": "previous broker + StrandsClient",
    "raw": "strands-trio broker + raw socket loop",
    "pystrands": "strands-trio broker + pystrands",
    "ws-echo": "trio-websocket echo",
    "adapter-deflate": "adapter echo, permessage-deflate",
    "strands-deflate": "strands-trio broker + StrandsClient, deflate",
    "reference": "reference Go broker + StrandsClient",
    "reference-pystrands": "reference Go broker + pystrands",
}
DEFAULT = [
    "adapter",
    "strands",
    "raw",
    "pystrands",
    "ws-echo",
    "adapter-deflate",
    "strands-deflate",
]
#: The contenders that are a bare echo server (``_servers.py KIND``): no broker, no backend.
SERVER_OF = {
    "adapter": "adapter",
    "adapter-deflate": "adapter-deflate",
    "ws-echo": "trio-websocket",
}
CEILING = "adapter"
#: The targets against the ceiling: throughput at least, p99 at most.
TARGET_THROUGHPUT, TARGET_P99 = 0.75, 1.5
#: A load generator on a CPU this share of the window (%) may be what limits a row.
LOAD_SATURATED = 85.0
#: The contenders whose clients offer permessage-deflate (a broker started with --compression).
DEFLATE = frozenset({"adapter-deflate", "strands-deflate"})
BACKEND_OF = {
    "strands": "strands",
    "strands-deflate": "strands",
    "previous": "strands",
    "pystrands": "pystrands",
    "raw": "raw-broker",
    "reference": "strands",
    "reference-pystrands": "pystrands",
}
NO_REFERENCE = (
    "reference: not measured: no --reference-binary given. The reference Go broker "
    "(pystrands-go) is not installed on this machine and this benchmark does not download it; "
    "build it and pass --reference-binary PATH to compare against it"
)
MEMORY_LABELS = {
    "strands": "strands-trio broker",
    "previous": "previous broker",
    "reference": "reference broker",
}


# ---------------------------------------------------------------------- ping-pong


def start_broker(procs: Processes, kind: str, args: argparse.Namespace) -> Broker:
    """The broker of contender *kind*, listening."""
    if kind.startswith("reference"):
        return start_reference_broker(procs, args.reference_binary)
    tree = args.previous if kind == "previous" else None
    extra = ("--compression",) if kind in DEFLATE else ()
    return start_strands_broker(procs, max_connections=args.clients + 100, tree=tree, extra=extra)


def run_pingpong(args: argparse.Namespace, kind: str, label: str) -> Round:
    """One run of contender *kind*: fresh processes, the ping-pong load on CPU 1."""
    with processes("broker-bench-") as procs:
        cpu = CpuMarks()
        if kind in SERVER_OF:
            echo, port = start_echo_server(procs, SERVER_OF[kind], name="echo")
            cpu.watch("server", echo.pid)
        else:
            broker = start_broker(procs, kind, args)
            backend = start_backend(procs, BACKEND_OF[kind], broker)
            cpu.watch("broker", broker.proc.pid)
            cpu.watch("backend", backend.pid)
            port = broker.ws_port
        deflate = ["--deflate"] if kind in DEFLATE else []
        summary, samples = pingpong(procs, port, args, label, cpu, *deflate)
        trouble = problems(summary, args.clients)
        if trouble:
            logs = "\n".join(procs.log(name) for name in ("broker", "backend", "echo"))
            raise RuntimeError(f"{kind}: " + "; ".join(trouble) + "\n" + logs)
        procs.report_complaints("broker", "backend", "echo")
    return Round(len(samples) / args.duration, samples, cpu.shares())


# ---------------------------------------------------------------------- report


def rate(r: Round) -> float:
    return r.rate


def p99(r: Round) -> float:
    return r.percentile(0.99)


def micros_of(name: str) -> Callable[[Round], float]:
    """*name*'s CPU time per round trip in a round, µs."""
    return lambda r: r.micros(name)


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(
        f"\nBroker ping-pong: {args.clients} WebSocket clients, {args.duration:g} s timed after "
        f"{args.warmup:g} s warm-up, {args.rounds} interleaved round(s); median of rounds; "
        f"x ceiling: the median of each round's ratio to the {CEILING} echo of the same round"
    )
    print(
        f"{'contender':44s} {'msg/s':>8s} {'min':>8s} {'max':>8s} {'x ceiling':>9s} "
        f"{'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s} {'p99 x ceiling':>13s}"
    )
    for kind, rounds in results.items():
        rates = Spread.of(r.rate for r in rounds)
        print(
            f"{LABELS[kind]:44s} {rates.median:8,.0f} {rates.low:8,.0f} {rates.high:8,.0f} "
            f"{paired_ratio(results, kind, CEILING, rate):9.2f} "
            f"{percentile_ms(rounds, 0.50):7.2f} {percentile_ms(rounds, 0.95):7.2f} "
            f"{percentile_ms(rounds, 0.99):7.2f} {paired_ratio(results, kind, CEILING, p99):13.2f}"
        )
    print(
        "\nCPU time per round trip (µs; the figure a busy machine disturbs least), and the "
        "share of the\ntimed window each process spent on a CPU / waiting for one (%)"
    )
    names = ("broker", "backend", "server", "load")
    print(f"{'contender':44s} " + " ".join(f"{name:>18s}" for name in names))
    for kind, rounds in results.items():
        cells = []
        for name in names:
            if name not in rounds[0].cpu:
                cells.append(f"{'':>18s}")
                continue
            ran, waited = cpu_share(rounds, name)
            micros = median_of(rounds, micros_of(name))
            cells.append(f"{micros:6.0f} µs {ran:3.0f}/{waited:<3.0f}")
        print(f"{LABELS[kind]:44s} " + " ".join(cells))
    print_load_share(results)
    print_verdicts(results, args)


def print_load_share(results: dict[str, list[Round]]) -> None:
    """Say whether the load generator could have been what limited a row."""
    busiest = max(
        ((r.cpu.get("load", NAN2)[0], kind) for kind, rounds in results.items() for r in rounds),
        default=(math.nan, ""),
    )
    share, kind = busiest
    if math.isnan(share):
        return
    verdict = (
        f"it may have limited that row (>= {LOAD_SATURATED:.0f} %)"
        if share >= LOAD_SATURATED
        else "never the bottleneck"
    )
    print(
        f"\nLoad generator (picows): at most {share:.0f} % of a CPU in any round "
        f"({LABELS[kind]}): {verdict}"
    )


def print_verdicts(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    if "strands" in results and CEILING in results:
        throughput = paired_ratio(results, "strands", CEILING, rate)
        tail = paired_ratio(results, "strands", CEILING, p99)
        met = throughput >= TARGET_THROUGHPUT and tail <= TARGET_P99
        print(
            f"\nstrands (our broker + our echo backend) vs the {CEILING} echo: throughput "
            f"{throughput:.2f}x (target >= {TARGET_THROUGHPUT}), p99 {tail:.2f}x "
            f"(target <= {TARGET_P99}): {'met' if met else 'NOT met'}"
        )
    if "strands" in results and "previous" in results:
        throughput = paired_ratio(results, "strands", "previous", rate)
        tail = paired_ratio(results, "strands", "previous", p99)
        print(f"strands vs previous (same backend): throughput {throughput:.2f}x, p99 {tail:.2f}x")
    if "adapter-deflate" in results and CEILING in results:
        throughput = paired_ratio(results, "adapter-deflate", CEILING, rate)
        cpu = paired_ratio(results, "adapter-deflate", CEILING, micros_of("server"))
        print(
            f"permessage-deflate on the adapter echo: throughput {throughput:.2f}x, server CPU "
            f"per round trip {cpu:.2f}x (the compression cost, both ways, for small messages)"
        )
    if "strands-deflate" in results and "strands" in results:
        throughput = paired_ratio(results, "strands-deflate", "strands", rate)
        cpu = paired_ratio(results, "strands-deflate", "strands", micros_of("broker"))
        print(
            f"permessage-deflate on our broker (--compression): throughput {throughput:.2f}x, "
            f"broker CPU per round trip {cpu:.2f}x"
        )
    if "reference" in results and "strands" in results:
        throughput = paired_ratio(results, "strands", "reference", rate)
        tail = paired_ratio(results, "strands", "reference", p99)
        verdict = "met" if throughput >= 1 and tail <= 1.5 else "NOT met"
        print(
            f"strands vs reference (same backend): throughput {throughput:.2f}x (target >= 1), "
            f"p99 {tail:.2f}x (target <= 1.5): {verdict}"
        )
    elif not args.reference_binary:
        print(f"\n{NO_REFERENCE}")


def plot(results: dict[str, list[Round]], memory: Memory | None, args: argparse.Namespace) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    kinds = list(results)
    color = colors(kinds)
    plot_latencies(left, results, LABELS, color)
    left.set_title(f"Latency CDF, {args.clients} clients in ping-pong", fontsize=10)

    texts = []
    for kind in kinds:
        ratio = paired_ratio(results, kind, CEILING, rate)
        median = median_of(results[kind], rate)
        texts.append(f"{median:,.0f}/s" + ("" if math.isnan(ratio) else f" ({ratio:.2f}x)"))
    rates = [[r.rate for r in results[kind]] for kind in kinds]
    bars(right, kinds, rates, texts, color=[color[k] for k in kinds])
    right.set_xlabel("round trips per second (median; bars: min to max)")
    title = f"Throughput, {args.rounds} interleaved round(s); (x the {CEILING} echo)"
    if memory:
        title += f"\nbroker memory: {memory.per_connection_kib:.1f} KiB per idle connection"
    right.set_title(title, fontsize=10)
    save_figure(fig, args.plot)


# ---------------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="2 s runs, 1 round, 500 idle connections")
    options.add("--clients", type=int, default=50, help="WebSocket clients in ping-pong")
    options.add_window(least=0)  # no rounds: memory only
    options.add_contenders(
        LABELS, None,
        help=f"comma-separated, from: {', '.join(LABELS)} (default: {','.join(DEFAULT)}; "
        "previous with --previous, reference with --reference-binary)",
    )  # fmt: skip
    add_previous(options)
    options.add("--reference-binary", help="the reference Go broker's executable")
    options.add_mode(
        "--connections", full=3000, quick=500, type=int,
        help="idle connections for memory (0: skip)",
    )  # fmt: skip
    options.add(
        "--batches", type=int, default=2,
        help="batches of idle connections, one after the other (default 2: the second "
        "shows a leak)",
    )  # fmt: skip
    options.add_plot(RESULTS / "broker.png")
    args = options.parse()
    if args.clients < 1:
        options.error("--clients must be at least 1")
    if args.connections < 0 or args.batches < 1:
        options.error("--connections must be >= 0, --batches at least 1")
    if args.reference_binary and not os.access(args.reference_binary, os.X_OK):
        options.error(f"--reference-binary {args.reference_binary}: not an executable file")
    if args.kinds is None:
        args.kinds = list(DEFAULT)
        if args.previous:
            args.kinds.insert(2, "previous")
        if args.reference_binary:
            args.kinds.insert(2, "reference")
    for kind in args.kinds:
        if kind.startswith("reference") and not args.reference_binary:
            options.error(f"{kind} needs --reference-binary PATH")
        if kind == "previous" and not args.previous:
            options.error("previous needs --previous DIR")
    return args


def main() -> None:
    args = parse()
    machine = Machine(", broker pinned to CPU 0, backend and load generator to CPU 1", WAITING)
    results: dict[str, list[Round]] = {}
    if args.kinds and args.rounds:
        run = partial(run_pingpong, args)
        results = interleaved_rounds(args.kinds, args.rounds, run, Round.show)
    memories: dict[str, Memory] = {}
    if args.connections:
        given = {"strands": True, "previous": args.previous, "reference": args.reference_binary}
        for kind in [kind for kind, wanted in given.items() if wanted]:
            note(f"memory: {kind}, {args.connections:,} idle connections")
            memories[kind] = measure_memory(args, kind)

    machine.report()
    if results:
        print_table(results, args)
    elif not args.reference_binary:
        print(f"\n{NO_REFERENCE}")
    for kind, memory in memories.items():
        print_memory(memory, MEMORY_LABELS[kind])
    if "strands" in memories and "previous" in memories:
        ours, before = memories["strands"], memories["previous"]
        print(
            f"  per connection: current {ours.per_connection_kib:.1f} KiB vs previous "
            f"{before.per_connection_kib:.1f} KiB "
            f"({ours.per_connection_kib / before.per_connection_kib:.2f}x)"
        )
    if results:
        plot(results, memories.get("strands"), args)


if __name__ == "__main__":
    main()
