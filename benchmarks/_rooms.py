"""Room fan-out through brokers, for ``cluster.py`` and ``fanout.py``: a setup of broker nodes,
a publisher and the clients of one room (:func:`open_setup`), steps of rising rate
(:func:`search`), several setups' steps interleaved (:func:`run_searches`).

Theory of operation: a setup is one or more brokers (``python -m strands_trio broker``; more
than one joined through a ``redis-server`` of the benchmark's own), a publisher backend on the
first node and an admitting backend on each other one, and two load-generator processes whose
clients all join one room (``_roomclients.py``). A step asks the publisher for RATE messages per
second for some seconds (open loop), then each load generator for the delays of the step's
deliveries: a :class:`Step`. Before a step, the load generators report once no message has come
for 0.25 s, so that an overloaded step's backlog does not spill into the next. A step is
sustained when at least :data:`GOOD_SHARE` of the expected deliveries arrived and no client was
cut off (and, if asked, its p99 delay was short enough). The share of each step's window that
each process ran on a CPU, and waited for one, says which one was the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
from _brokers import start_strands_broker, wait_healthz
from _common import (
    HERE,
    HOST,
    START_TIMEOUT,
    CpuMarks,
    Options,
    Processes,
    note,
    percentile,
    processes,
    read_line,
    start_redis,
    tell,
    two_cpus,
)

CLIENTS = HERE / "_roomclients.py"
GOOD_SHARE = 0.99  # of the expected deliveries
#: A failed step during which a broker node waited for a CPU this share of the window (%) is
#: run once more: on a shared machine, a neighbour's burst is not the broker's limit.
NOISY_WAIT = 25.0
LOAD_TIMEOUT = 60.0  # seconds for a load generator to connect its clients, or to go quiet


@attrs.frozen
class Step:
    rate: float  # messages per second sent to the room
    seconds: float
    sent: int
    delays: array[float]  # every delivery's delay, sorted
    cpu: dict[str, tuple[float, float]]  # process -> % of the window on a CPU, waiting for one
    closed: int  # clients the broker closed for being too slow (their queue filled)
    max_p99: float | None = None  # seconds: a step with a longer p99 is not sustained

    @property
    def delivered_per_s(self) -> float:
        return len(self.delays) / self.seconds

    def expected(self, clients: int) -> int:
        return self.sent * clients

    def percentile(self, q: float) -> float:
        return percentile(self.delays, q)

    def good(self, clients: int) -> bool:
        """Sustained: (nearly) every delivery arrived, no client was cut off (and the p99
        delay was within ``max_p99``, if set)."""
        if self.max_p99 is not None and not self.percentile(0.99) <= self.max_p99:
            return False
        return len(self.delays) >= GOOD_SHARE * self.expected(clients) and not self.closed


@attrs.frozen
class Result:
    nodes: int
    steps: list[Step]
    clients: int
    label: str = ""

    @property
    def best(self) -> Step | None:
        good = [s for s in self.steps if s.good(self.clients)]
        return max(good, key=lambda s: s.delivered_per_s) if good else None

    @property
    def name(self) -> str:
        return self.label or nodes_label(self.nodes)


def nodes_label(nodes: int) -> str:
    return f"{nodes} node{'s' if nodes > 1 else ''}"


class Setup:
    """One setup's processes, ready for steps (made by :func:`open_setup`)."""

    def __init__(
        self,
        procs: Processes,
        label: str,
        nodes: int,
        publisher: subprocess.Popen[bytes],
        loads: list[subprocess.Popen[bytes]],
        args: argparse.Namespace,
    ) -> None:
        self.procs, self.label, self.nodes, self.args = procs, label, nodes, args
        self.publisher, self.loads = publisher, loads
        self.steps: list[Step] = []
        self._cpu = CpuMarks(procs.pids())
        self._number = 0

    def step(self, rate: float, seconds: float, *, record: bool = True) -> Step:
        """Publish *rate* messages per second for *seconds*; the deliveries' delays, and the
        share of the window each process ran (kept in :attr:`steps` if *record*)."""
        self._number += 1
        number = self._number
        for i, load in enumerate(self.loads):  # the previous step's backlog has drained
            tell(load, "quiet")
            answer = read_line(load, time.monotonic() + LOAD_TIMEOUT)
            if answer.strip() != "quiet":
                raise RuntimeError(f"load{i} said {answer!r}")
        self._cpu.mark("before")
        tell(self.publisher, f"run {number} {rate} {seconds}")
        line = read_line(self.publisher, time.monotonic() + seconds + 30).split()
        self._cpu.mark("after")
        time.sleep(self.args.grace)  # stragglers of this step still count: they carry its number
        self.procs.check_alive()
        delays = array("d")
        closed = 0
        for i, load in enumerate(self.loads):
            tell(load, f"report {number}")
            answer = read_line(load, time.monotonic() + 30)
            if not answer.startswith("ok"):
                raise RuntimeError(f"load{i} said {answer!r}\n{self.procs.log(f'load{i}')}")
            closed += json.loads(answer.split(" ", 2)[2])["closed"]
            delays.frombytes((self.procs.dir / f"load{i}.{number}").read_bytes())
        limit = getattr(self.args, "max_p99", None)
        cpu = self._cpu.shares("before", "after")
        result = Step(rate, seconds, int(line[2]), array("d", sorted(delays)), cpu, closed, limit)
        if record:
            self.steps.append(result)
            note(f"{self.label}: {self.describe(result)}")
        return result

    def describe(self, s: Step) -> str:
        clients = self.args.clients
        verdict = "good" if s.good(clients) else "FAILED"
        busy = ", ".join(f"{name} {run:.0f}/{wait:.0f}" for name, (run, wait) in s.cpu.items())
        return (
            f"{s.rate:,.0f} msg/s -> {s.delivered_per_s:,.0f} deliveries/s "
            f"({len(s.delays) / max(1, s.expected(clients)):.1%} of expected), "
            f"p99 {s.percentile(0.99) * 1e3:.1f} ms: {verdict}"
            + (f", {s.closed} clients cut off" if s.closed else "")
            + f"  [% on CPU/waiting: {busy}]"
        )

    def result(self) -> Result:
        return Result(self.nodes, self.steps, self.args.clients, self.label)


def start_node(
    procs: Processes,
    name: str,
    cpu: int | None,
    clients: int,
    redis_url: str | None,
    tree: Path | None = None,
) -> tuple[int, int]:
    """Start a broker node as *name* (from the source *tree* if given); its two ports."""
    extra = ("--redis", redis_url, "--node-id", name) if redis_url else ()
    broker = start_strands_broker(
        procs, max_connections=clients + 100, nofile=clients + 200, tree=tree, name=name,
        cpu=cpu, extra=extra,
    )  # fmt: skip
    return broker.ws_port, broker.tcp_port


def start_client(
    procs: Processes,
    name: str,
    mode: str,
    *argv: str,
    cpu: int | None,
    nofile: int = 0,
    pipes: bool = False,
    service: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``_roomclients.py MODE ARGV...`` as *name* (talked to through its stdin and
    stdout with *pipes*)."""
    command = [sys.executable, str(CLIENTS), mode, *argv]
    pipe = subprocess.PIPE if pipes else None
    stdin = subprocess.PIPE if pipes else subprocess.DEVNULL
    return procs.start(
        name, command, cpu=cpu, nofile=nofile, stdin=stdin, stdout=pipe, service=service
    )


@contextlib.contextmanager
def open_setup(
    nodes: int,
    args: argparse.Namespace,
    *,
    tree: Path | None = None,
    label: str | None = None,
    client_cpu: int | None = None,
) -> Iterator[Setup]:
    """Start a setup of *nodes* broker nodes (from the source *tree* if given), its publisher
    and its ``args.clients`` clients (pinned to *client_cpu* if given, else floating); stop it
    all on exit. With two CPUs, the nodes are pinned to CPU 0 and 1."""
    label = label or nodes_label(nodes)
    with processes("rooms-bench-") as procs:
        redis_url = f"redis://{HOST}:{start_redis(procs)}" if nodes > 1 else None
        cpus = [0, 1] if two_cpus() else [None, None]
        ports = [
            start_node(procs, f"node{i}", cpus[i], args.clients, redis_url, tree)
            for i in range(nodes)
        ]
        publisher = start_client(
            procs, "publisher", "publisher", str(ports[0][1]), cpu=client_cpu, pipes=True
        )
        assert read_line(publisher, time.monotonic() + START_TIMEOUT).strip() == "ready"
        for i in range(1, nodes):
            start_client(procs, f"admit{i}", "admit", str(ports[i][1]), cpu=None)
        for i in range(nodes):
            wait_healthz(procs, ports[i][0], f"node{i}'s backend", lambda h: bool(h["backends"]))
        # Two load generators either way: the same client-side capacity for both setups.
        share = [args.clients // 2, args.clients - args.clients // 2]
        note(f"{label}: connecting {args.clients:,} clients")
        loads = []
        for i in range(2):
            port, out = str(ports[i % nodes][0]), str(procs.dir / f"load{i}")
            load = start_client(
                procs, f"load{i}", "load", port, str(share[i]), out,
                cpu=client_cpu, nofile=share[i] + 200, service=False, pipes=True,
            )  # fmt: skip
            loads.append(load)
        for load in loads:
            line = read_line(load, time.monotonic() + LOAD_TIMEOUT)
            if not line.startswith("ready"):
                raise RuntimeError(f"a load generator said {line!r}\n{procs.log('load0')}")
        for i in range(nodes):
            wanted = share[i] if nodes > 1 else args.clients
            wait_healthz(procs, ports[i][0], f"node{i}'s clients", counts_at_least(wanted))
        setup = Setup(procs, label, nodes, publisher, loads, args)
        try:
            yield setup
        finally:
            for load in loads:
                assert load.stdin is not None
                load.stdin.close()
            for load in loads:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    load.wait(60)
            procs.report_complaints(*(f"node{i}" for i in range(nodes)))


def counts_at_least(n: int) -> Callable[[dict[str, Any]], bool]:
    """A ``/healthz`` check: the node counts *n* connections or more."""
    return lambda health: bool(health["connections"] >= n)


def add_step_options(options: Options, *, max_steps: int) -> None:
    """The flags of :func:`search` and of the steps: ``--duration`` (seconds per step),
    ``--first-rate``, ``--refine``, ``--max-rate``, ``--max-steps`` and ``--grace``."""
    options.add_mode("--duration", full=5.0, quick=2.0, help="seconds per step")
    options.add("--first-rate", type=float, default=5.0, help="messages/s of step 1")
    options.add_mode("--refine", full=2, quick=1, type=int, help="bisection steps")
    options.add("--max-rate", type=float, default=5000.0, help="no step above this")
    options.add("--max-steps", type=int, default=max_steps)
    options.add("--grace", type=float, default=0.5, help="seconds after each step")

    def check(args: argparse.Namespace) -> None:
        if args.duration <= 0 or args.first_rate <= 0:
            options.error("--duration and --first-rate must be positive")

    options.validate(check)


def search(args: argparse.Namespace) -> Generator[float, Step, None]:
    """The rates of one setup's steps: each is sent the step it asked for. Doubling from
    ``--first-rate`` until a step is not sustained (halving while none has been), then
    ``--refine`` bisections between the highest sustained rate and the lowest failed one."""
    rate, good, bad = args.first_rate, None, None
    last: Step | None = None
    for _ in range(args.max_steps):
        if rate > args.max_rate or rate < args.first_rate / 64:
            break
        last = yield rate
        if last.good(args.clients):
            good, rate = rate, rate * 2
            if bad is not None:
                break  # came down to a sustained rate
        else:
            bad, rate = rate, rate / 2
            if good is not None or last.closed:
                break
    for _ in range(args.refine):  # bisect between the last good rate and the failed one
        if good is None or bad is None or last is None or last.closed:
            break  # clients were cut off: the room is not what it was
        middle = (good + bad) / 2
        last = yield middle
        if last.good(args.clients):
            good = middle
        else:
            bad = middle


def run_searches(setups: list[Setup], args: argparse.Namespace) -> list[Result]:
    """Run every setup's :func:`search`, their steps interleaved (one step of each in turn,
    while each has steps to run), after a warm-up step each; their results. A failed step
    during which a node waited for a CPU :data:`NOISY_WAIT` % of the time is run again."""
    for setup in setups:
        note(f"{setup.label}: warm-up")
        setup.step(args.first_rate, 1.0, record=False)
    searches = [search(args) for _ in setups]
    rates: list[float | None] = [next(s) for s in searches]
    while any(rate is not None for rate in rates):
        for i, setup in enumerate(setups):
            rate = rates[i]
            if rate is None:
                continue
            step = setup.step(rate, args.duration)
            waited = max(w for name, (_, w) in step.cpu.items() if name.startswith("node"))
            if not step.good(args.clients) and not step.closed and waited >= NOISY_WAIT:
                note(f"{setup.label}: the node waited {waited:.0f} %: again")
                setup.steps.pop()  # the noisy one
                step = setup.step(rate, args.duration)
            try:
                rates[i] = searches[i].send(step)
            except StopIteration:
                rates[i] = None
    return [setup.result() for setup in setups]


def common_rate(results: list[Result]) -> float | None:
    """The highest rate that every setup sustained (to compare latencies at equal load)."""
    rates = [{s.rate for s in r.steps if s.good(r.clients)} for r in results]
    both = set.intersection(*rates) if rates else set()
    return max(both) if both else None


def step_at(result: Result, rate: float) -> Step:
    return next(s for s in result.steps if s.rate == rate)
