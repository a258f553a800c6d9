"""Room fan-out benchmark: one room of 2,000 WebSocket clients and one publisher backend, on our
broker and on the broker of another source tree (the one before a change), side by side.

    python benchmarks/fanout.py --previous /work/prev            # full run (about 4 minutes)
    python benchmarks/fanout.py --previous /work/prev --quick    # a smoke run (about a minute)
    python benchmarks/fanout.py                                  # our broker alone

The machinery is ``benchmarks/cluster.py``'s one-node setup (``_rooms.open_setup(1, ...)``):
a broker pinned to CPU 0; a publisher backend (``StrandsClient``) that admits every client
into the room and sends ``message_to_room`` at a fixed rate (open loop), each message carrying
the ``time.perf_counter()`` of its sending; the clients in two raw epoll load generators that
record each delivery's delay. Here the publisher and the load generators are pinned to CPU 1,
so that the broker has CPU 0 to itself and the clients' side shows apart: near 100 % of
CPU 1, it is what stopped the climb, and the broker's figure is a lower bound.

Each setup runs steps of rising rate, doubling until a step is not sustained, halving while
none has been, then bisecting (``_rooms.search``). Sustained: at least 99 % of the deliveries
arrived within the step and its grace, no client was cut off, and (here) the p99 delay was
within ``--max-p99`` (0.5 s): a backlog growing through the step fails it even if it drains in
the grace. Both setups are up at once and their steps interleaved, one of each in turn
(``_rooms.run_searches``), so that a noisy neighbour hits both alike; the ``previous`` setup
runs with ``PYTHONPATH=DIR`` from ``DIR`` (``--previous``).

A setup's result is its best sustained step: deliveries per second and their p50/p99 delay;
the delays are also compared at the highest rate both sustained (if the current broker never
ran at a rate the previous one sustained, it gets one more step at the previous one's best).
Target: the current broker sustains at least 3x the deliveries per second of the previous one.
Each step's line on stderr gives the share of its window each process ran on a CPU and waited
for one; the table says how busy the clients' side was at each setup's best step.

Open files: every client is two sockets on this machine; the broker and the load generators
raise their soft limit in the child (``ulimit -Hn`` is the ceiling).

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import contextlib
import resource

from _brokers import add_previous
from _common import NAN2, RESULTS, Machine, Options, note, two_cpus
from _rooms import Result, Setup, add_step_options, common_rate, open_setup, run_searches
from _rooms_report import plot, print_table

TARGET = 3.0  # current / previous, deliveries per second sustained
CLIENTS_SATURATED = 90.0  # % of CPU 1 used by the load generators and the publisher
MAX_P99 = 0.5  # seconds: beyond it a step's backlog is growing, whatever arrived by its end


def print_client_share(results: list[Result]) -> None:
    """Say, for each setup's best step, how busy the clients' side was: the load generators
    and the publisher share CPU 1, so near 100 % there the broker was not what stopped it."""
    for result in results:
        best = result.best
        if best is None:
            continue
        clients = sum(ran for name, (ran, _) in best.cpu.items() if name != "node0")
        broker = best.cpu.get("node0", NAN2)
        limited = clients >= CLIENTS_SATURATED
        print(
            f"{result.name}, best step: broker {broker[0]:.0f} % on CPU ({broker[1]:.0f} % "
            f"waiting), load generators + publisher {clients:.0f} % of their CPU"
            + (": the client side was saturated, the broker's figure is a lower bound"
               if limited else "")
        )  # fmt: skip


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="2 s steps, one bisection")
    options.add("--clients", type=int, default=2000, help="WebSocket clients in the room")
    add_previous(options)
    add_step_options(options, max_steps=12)
    options.add(
        "--max-p99", type=float, default=MAX_P99,
        help=f"seconds: a step with a longer p99 delay is not sustained (default {MAX_P99:g})",
    )  # fmt: skip
    options.add_plot(RESULTS / "fanout.png")
    args = options.parse()
    if args.clients < 2:
        options.error("--clients must be at least 2")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < args.clients + 1000:
        options.error(f"{args.clients} clients need more open files than ulimit -Hn ({hard})")
    return args


def run(args: argparse.Namespace) -> list[Result]:
    """Open the setups (the previous broker's first: the ratio line reads "current /
    previous"), run their searches interleaved; their results."""
    cpu = 1 if two_cpus() else None  # the publisher and the load generators; brokers: CPU 0
    with contextlib.ExitStack() as stack:
        opened: list[Setup] = []
        if args.previous:
            previous = open_setup(1, args, tree=args.previous, label="previous", client_cpu=cpu)
            opened.append(stack.enter_context(previous))
        current = open_setup(1, args, label="current", client_cpu=cpu)
        opened.append(stack.enter_context(current))
        results = run_searches(opened, args)
        if len(opened) == 2 and common_rate(results) is None and results[0].best:
            # The delays at equal load: the current broker at the previous one's best rate.
            note("current: at the previous broker's best rate")
            opened[1].step(results[0].best.rate, args.duration)
            results = [setup.result() for setup in opened]
    return results


def main() -> None:
    args = parse()
    machine = Machine(", each broker pinned to CPU 0")
    setups = 2 if args.previous else 1
    needed = setups * 2 * args.clients + 1000  # each client: the broker's socket and its own
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    note(
        f"{setups} setup(s) of {args.clients:,} clients: about {needed:,} sockets in all "
        f"(each process's hard limit: {hard})"
    )
    results = run(args)
    machine.report()
    print(f"(here a sustained step also has a p99 delay within {args.max_p99 * 1e3:.0f} ms)")
    print_table(results, args, target=TARGET, p99_target=None)
    print_client_share(results)
    plot(results, args, log_rates=True, p99_line=args.max_p99)


if __name__ == "__main__":
    main()
