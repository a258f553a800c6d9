"""Broker cluster benchmark: fan-out of room messages to 500 WebSocket clients, on one broker
node and on two nodes joined through Redis, in one run.

    python benchmarks/cluster.py            # full run (about 4 minutes)
    python benchmarks/cluster.py --quick    # a smoke run (about a minute)

Setups, each its own set of processes (``python -m strands_trio broker``; the publisher and
the load generators are ``benchmarks/_roomclients.py``'s, the machinery ``_rooms.py``'s):

- ``1 node``: one broker; a publisher backend (``StrandsClient``) connected to it, which also
  admits every client; the clients, in two load-generator processes (``load``: a raw epoll
  WebSocket reader, cheaper per message than the brokers it measures), all on that broker;
- ``2 nodes``: two brokers with ``--redis`` to a ``redis-server`` of the benchmark's own
  (without persistence); the publisher on node A, an admitting backend on node B (each node
  admits through its own backends); half the clients on each node, one load generator per
  node.

Every client joins one room. The publisher sends ``message_to_room`` at a fixed rate (open
loop: it never waits for deliveries), each message carrying the ``time.perf_counter()`` of its
sending (system-wide on Linux, so comparable across processes); every client records the
delay to its arrival. Each setup runs steps of rising rate, doubling until a step is not
sustained (less than 99 % of the expected deliveries arrived, or the broker cut off a client
whose queue filled; halving instead while no step has been), then bisects between the last
sustained rate and the failed one (``_rooms.search``; ``_rooms.run_searches`` can interleave
the steps of several setups that are up at once, as ``benchmarks/fanout.py`` does). A setup's
result is its best sustained step: deliveries per second, and that step's delays; the delays
are also compared at the highest rate both setups sustained. With two CPUs, a 1-node broker is
pinned to CPU 0, the two nodes to CPU 0 and 1; load generators, publisher and Redis
float. The share of each step's window that each process ran on a CPU, and waited for one
(``/proc/PID/task/*/schedstat``), says which one was the bottleneck. Between steps, the load
generators report once no message has come for 0.25 s, so that an overloaded step's backlog
does not spill into the next.

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse

from _common import IMAGES, Machine, Options
from _rooms import Result, add_step_options, open_setup, run_searches
from _rooms_report import plot, print_table

TARGET = 1.6  # two nodes / one node, deliveries per second sustained


def run_setup(nodes: int, args: argparse.Namespace) -> Result:
    """Start one setup's processes, run its steps, stop it."""
    with open_setup(nodes, args) as setup:
        return run_searches([setup], args)[0]


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="2 s steps, one bisection")
    options.add("--clients", type=int, default=500, help="WebSocket clients in the room")
    add_step_options(options, max_steps=10)
    options.add_plot(IMAGES / "cluster.png")
    return options.parse()


def main() -> None:
    args = parse()
    machine = Machine()
    results = [run_setup(1, args), run_setup(2, args)]
    machine.report()
    print_table(results, args, target=TARGET)
    plot(results, args)


if __name__ == "__main__":
    main()
