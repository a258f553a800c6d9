"""Broker cluster benchmark: fan-out of room messages to 500 WebSocket clients, on one broker
node and on two nodes joined through Redis, in one run.

    python benchmarks/cluster.py            # full run (about 4 minutes)
    python benchmarks/cluster.py --quick    # a smoke run (about a minute)

Setups, each its own set of processes (``python -m strands_trio broker``; the helpers below
run as ``python benchmarks/cluster.py _publisher|_admit|_load ...``):

- ``1 node``: one broker; a publisher backend (``StrandsClient``) connected to it, which also
  admits every client; the clients, in two load-generator processes (``_load``: a raw epoll
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
sustained rate and the failed one (``search``; ``run_searches`` can interleave the steps of
several setups that are up at once, as ``benchmarks/fanout.py`` does). A setup's result is
its best sustained step: deliveries per second, and that step's delays; the delays are also
compared at the highest rate both setups sustained. With two CPUs, a 1-node
broker is pinned to CPU 0, the two nodes to CPU 0 and 1; load generators, publisher and Redis
float. The share of each step's window that each process ran on a CPU, and waited for one
(``/proc/PID/task/*/schedstat``), says which one was the bottleneck. Between steps, the load
generators report once no message has come for 0.25 s, so that an overloaded step's backlog
does not spill into the next.

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from array import array
from collections.abc import Generator, Iterator
from pathlib import Path

import attrs
from broker import (
    START_TIMEOUT,
    Processes,
    cpu_times,
    http_get_json,
    processes,
    read_line,
    start_strands_broker,
    two_cpus,
    wait_for,
)

HERE = Path(__file__).resolve().parent
THIS = Path(__file__).resolve()
ROOM = "bench"
TARGET_P99 = 0.050  # seconds
GOOD_SHARE = 0.99  # of the expected deliveries


# ---------------------------------------------------------------------- helpers (subprocesses)


def run_publisher(port: int) -> None:
    """A backend that admits every client and, on ``run STEP RATE SECONDS`` on stdin, sends
    room messages at RATE per second for SECONDS, then prints ``done STEP SENT``."""
    import trio

    from strands_trio import ConnectionRequestContext, StrandsClient

    class Publisher(StrandsClient):
        async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
            request.context.room_id = ROOM
            return True

    async def main() -> None:
        client = Publisher("127.0.0.1", port)
        async with client.connected():
            print("ready", flush=True)
            stdin = trio.lowlevel.FdStream(os.dup(0))
            buffer = b""
            while True:
                while b"\n" not in buffer:
                    chunk = await stdin.receive_some()
                    if not chunk:
                        return
                    buffer += chunk
                line, buffer = buffer.split(b"\n", 1)
                _, step, rate, seconds = line.decode().split()
                sent = await publish(client, int(step), float(rate), float(seconds))
                print(f"done {step} {sent}", flush=True)

    async def publish(client: StrandsClient, step: int, rate: float, seconds: float) -> int:
        interval = 1 / rate
        start = time.perf_counter()
        sent = 0
        pad = "x" * 64
        while True:
            now = time.perf_counter()
            if now - start >= seconds:
                return sent
            due = int((now - start) / interval) + 1
            while sent < due:  # open loop: catch up in a burst if behind
                await client.send_room_message(ROOM, f"{step} {time.perf_counter()!r} {pad}")
                sent += 1
            await trio.sleep(max(0.0, start + sent * interval - time.perf_counter()))

    trio.run(main)


def run_admit(port: int) -> None:
    """A backend that only admits every client into the room (for node B)."""
    import trio

    from strands_trio import ConnectionRequestContext, StrandsClient

    class Admit(StrandsClient):
        async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
            request.context.room_id = ROOM
            return True

    trio.run(Admit("127.0.0.1", port).run)


def run_load(port: int, clients: int, out: Path) -> None:
    """*clients* WebSocket clients of 127.0.0.1:*port*, read by one blocking epoll loop that
    parses frames itself (no framework: this load generator must cost less CPU per delivery
    than the brokers it measures). Prints ``ready N`` once all are connected; records each
    message's delay by step; on ``report STEP`` on stdin, writes ``out.STEP`` (float64
    seconds) and prints ``ok STEP {json}``; on ``quiet``, prints ``quiet`` once no message
    has come for 0.25 s (the backlog of an overloaded step has drained); ends with stdin."""
    import base64
    import select
    import socket

    from _wsload import raise_nofile

    raise_nofile(clients + 100)
    socks: dict[int, socket.socket] = {}
    buffers: dict[int, bytes] = {}
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws/{ROOM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                sys.exit("the broker closed a handshake")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"handshake refused: {head[:60]!r}")
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        buffers[sock.fileno()] = rest
    print(f"ready {clients}", flush=True)

    delays: dict[int, array[float]] = {}
    state = {"closed": 0, "bad": 0}
    clock = time.perf_counter
    poll = select.epoll()
    for fd in socks:
        poll.register(fd, select.EPOLLIN)
    poll.register(0, select.EPOLLIN)
    command = b""
    last = clock()
    waiting_for_quiet = False

    def frames(fd: int, data: bytes, now: float) -> None:
        # One pass with a read position: a slice per frame of what is left of a 256 KiB read
        # would make a busy read quadratic.
        buf = buffers[fd] + data if buffers[fd] else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            opcode, length, offset = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length, offset = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, offset = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            stop = offset + length
            if end < stop:
                break
            pos = stop
            if opcode == 8:
                state["closed"] += 1
                poll.unregister(fd)
                return
            try:
                step_text, sent_text, _ = buf[offset:stop].split(b" ", 2)
                step, sent = int(step_text), float(sent_text)
            except ValueError:
                state["bad"] += 1
                continue
            samples = delays.get(step)
            if samples is None:
                samples = delays[step] = array("d")
            samples.append(now - sent)
        buffers[fd] = buf[pos:]

    while True:
        events = poll.poll(0.05 if waiting_for_quiet else -1)
        if waiting_for_quiet and clock() - last >= 0.25:
            print("quiet", flush=True)
            waiting_for_quiet = False
        for fd, _ in events:
            if fd == 0:
                chunk = os.read(0, 4096)
                if not chunk:
                    return
                command += chunk
                while b"\n" in command:
                    line, command = command.split(b"\n", 1)
                    if line == b"quiet":
                        waiting_for_quiet = True
                        continue
                    step = int(line.split()[1])
                    with open(f"{out}.{step}", "wb") as file:
                        delays.pop(step, array("d")).tofile(file)
                    print(f"ok {step} {json.dumps(state)}", flush=True)
                continue
            try:
                data = socks[fd].recv(262144)
            except BlockingIOError:
                continue
            now = last = clock()
            if not data:
                state["closed"] += 1
                poll.unregister(fd)
                continue
            frames(fd, data, now)


# ---------------------------------------------------------------------- the setups


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
        d = self.delays
        return d[min(len(d) - 1, int(q * len(d)))] if d else math.nan

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


def start_redis(procs: Processes) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    from broker import free_port

    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    procs.start("redis", [*command, "--appendonly", "no"], cpu=None)
    url = f"redis://127.0.0.1:{port}"

    def answers() -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for("redis-server", answers, procs, START_TIMEOUT)
    return url


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
        self._pids = {name: proc.pid for name, proc in procs._procs if name != "redis" or nodes > 1}
        self._number = 0

    def step(self, rate: float, seconds: float, *, record: bool = True) -> Step:
        """Publish *rate* messages per second for *seconds*; the deliveries' delays, and the
        share of the window each process ran (kept in :attr:`steps` if *record*)."""
        procs, loads, publisher = self.procs, self.loads, self.publisher
        self._number += 1
        number = self._number
        for i, load in enumerate(loads):  # the previous step's backlog has drained
            assert load.stdin is not None
            load.stdin.write(b"quiet\n")
            load.stdin.flush()
            answer = read_line(load, time.monotonic() + 60)
            if answer.strip() != "quiet":
                raise RuntimeError(f"load{i} said {answer!r}")
        before = {name: cpu_times(pid) for name, pid in self._pids.items()}
        started = time.monotonic()
        assert publisher.stdin is not None
        publisher.stdin.write(f"run {number} {rate} {seconds}\n".encode())
        publisher.stdin.flush()
        line = read_line(publisher, time.monotonic() + seconds + 30).split()
        elapsed = time.monotonic() - started
        cpu = {}
        for name, pid in self._pids.items():
            running, waiting = cpu_times(pid)
            cpu[name] = (
                100 * (running - before[name][0]) / elapsed,
                100 * (waiting - before[name][1]) / elapsed,
            )
        time.sleep(self.args.grace)  # stragglers of this step still count: they carry its number
        procs.check_alive()
        delays = array("d")
        closed = 0
        for i, load in enumerate(loads):
            assert load.stdin is not None
            load.stdin.write(f"report {number}\n".encode())
            load.stdin.flush()
            answer = read_line(load, time.monotonic() + 30)
            if not answer.startswith("ok"):
                raise RuntimeError(f"load{i} said {answer!r}\n{procs.log(f'load{i}')}")
            closed += json.loads(answer.split(" ", 2)[2])["closed"]
            delays.frombytes((procs.dir / f"load{i}.{number}").read_bytes())
        limit = getattr(self.args, "max_p99", None)
        result = Step(rate, seconds, int(line[2]), array("d", sorted(delays)), cpu, closed, limit)
        if record:
            self.steps.append(result)
            self.show(result)
        return result

    def show(self, s: Step) -> None:
        clients = self.args.clients
        verdict = "good" if s.good(clients) else "FAILED"
        busy = ", ".join(f"{name} {run:.0f}/{wait:.0f}" for name, (run, wait) in s.cpu.items())
        print(
            f"{self.label}: {s.rate:,.0f} msg/s -> {s.delivered_per_s:,.0f} deliveries/s "
            f"({len(s.delays) / max(1, s.expected(clients)):.1%} of expected), "
            f"p99 {s.percentile(0.99) * 1e3:.1f} ms: {verdict}"
            + (f", {s.closed} clients cut off" if s.closed else "")
            + f"  [% on CPU/waiting: {busy}]",
            file=sys.stderr,
        )

    def result(self) -> Result:
        return Result(self.nodes, self.steps, self.args.clients, self.label)


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
    and its clients (pinned to *client_cpu* if given, else floating); stop it all on exit."""
    label = label or f"{nodes} node{'s' if nodes > 1 else ''}"
    with processes() as procs:
        redis_url = start_redis(procs) if nodes > 1 else None
        cpus = [0, 1] if two_cpus() else [None, None]
        ports = [
            start_node(procs, f"node{i}", cpus[i], args.clients, redis_url, tree)
            for i in range(nodes)
        ]
        publisher = procs.start(
            "publisher",
            [sys.executable, str(THIS), "_publisher", str(ports[0][1])],
            cpu=client_cpu,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert read_line(publisher, time.monotonic() + START_TIMEOUT).strip() == "ready"
        for i in range(1, nodes):
            procs.start(
                f"admit{i}", [sys.executable, str(THIS), "_admit", str(ports[i][1])], cpu=None
            )
        for i in range(nodes):

            def has_backend(port: int = ports[i][0]) -> bool:
                health = http_get_json(port, "/healthz")
                return bool(health and health["backends"])

            wait_for(f"node{i}'s backend", has_backend, procs, START_TIMEOUT)
        # Two load generators either way: the same client-side capacity for both setups.
        loads = []
        share = [args.clients // 2, args.clients - args.clients // 2]
        print(f"{label}: connecting {args.clients:,} clients", file=sys.stderr)
        for i in range(2):
            port = ports[i % nodes][0]
            loads.append(
                procs.start(
                    f"load{i}",
                    [
                        sys.executable,
                        str(THIS),
                        "_load",
                        str(port),
                        str(share[i]),
                        str(procs.dir / f"load{i}"),
                    ],
                    cpu=client_cpu,
                    nofile=share[i] + 200,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    service=False,
                )
            )
        for load in loads:
            line = read_line(load, time.monotonic() + 60)
            if not line.startswith("ready"):
                raise RuntimeError(f"a load generator said {line!r}\n{procs.log('load0')}")
        for i in range(nodes):

            def all_there(
                port: int = ports[i][0], n: int = share[i] if nodes > 1 else args.clients
            ) -> bool:
                health = http_get_json(port, "/healthz")
                return bool(health and health["connections"] >= n)

            wait_for(f"node{i}'s clients", all_there, procs, START_TIMEOUT)
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


#: A failed step during which a broker node waited for a CPU this share of the window (%) is
#: run once more: on a shared machine, a neighbour's burst is not the broker's limit.
NOISY_WAIT = 25.0


def run_searches(setups: list[Setup], args: argparse.Namespace) -> list[Result]:
    """Run every setup's :func:`search`, their steps interleaved (one step of each in turn,
    while each has steps to run), after a warm-up step each; their results. A failed step
    during which a node waited for a CPU :data:`NOISY_WAIT` % of the time is run again."""
    for setup in setups:
        print(f"{setup.label}: warm-up", file=sys.stderr)
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
                print(f"{setup.label}: the node waited {waited:.0f} %: again", file=sys.stderr)
                setup.steps.pop()  # the noisy one
                step = setup.step(rate, args.duration)
            try:
                rates[i] = searches[i].send(step)
            except StopIteration:
                rates[i] = None
    return [setup.result() for setup in setups]


def run_setup(nodes: int, args: argparse.Namespace) -> Result:
    """Start one setup's processes, run its steps, stop it."""
    with open_setup(nodes, args) as setup:
        return run_searches([setup], args)[0]


# ---------------------------------------------------------------------- report


def common_rate(results: list[Result]) -> float | None:
    """The highest rate that every setup sustained (to compare latencies at equal load)."""
    rates = [{s.rate for s in r.steps if s.good(r.clients)} for r in results]
    both = set.intersection(*rates) if rates else set()
    return max(both) if both else None


def step_at(result: Result, rate: float) -> Step:
    return next(s for s in result.steps if s.rate == rate)


def name_of(result: Result) -> str:
    return result.label or f"{result.nodes} node{'s' if result.nodes > 1 else ''}"


def print_table(
    results: list[Result],
    args: argparse.Namespace,
    target: float,
    p99_target: float | None = TARGET_P99,
) -> None:
    """The best sustained step of each setup, the last one's deliveries per second over the
    first one's (against *target*), the delays at the highest rate all sustained (against
    *p99_target*, seconds, if any), and every step."""
    print(
        f"\nRoom fan-out: {args.clients} WebSocket clients in one room, one publisher, "
        f"{args.duration:g} s steps; sustained: >= {GOOD_SHARE:.0%} of the deliveries arrived "
        "and no client was cut off\n"
    )
    print(
        "| setup | best sustained rate, msg/s | deliveries/s | p50 ms | p99 ms "
        "| % on CPU / waiting |"
    )
    print("|---|---|---|---|---|---|")
    for result in results:
        best = result.best
        if best is None:
            print(f"| {name_of(result)} | none sustained | | | | |")
            continue
        busy = ", ".join(f"{k} {run:.0f}/{wait:.0f}" for k, (run, wait) in best.cpu.items())
        print(
            f"| {name_of(result)} | {best.rate:,.4g} | {best.delivered_per_s:,.0f} | "
            f"{best.percentile(0.5) * 1e3:.1f} | {best.percentile(0.99) * 1e3:.1f} | {busy} |"
        )
    one, two = results[0].best, results[-1].best
    if len(results) > 1 and one and two:
        ratio = two.delivered_per_s / one.delivered_per_s
        print(
            f"\n{name_of(results[-1])} / {name_of(results[0])}: {ratio:.2f}x deliveries per "
            f"second sustained (target: {target:g}x): {'met' if ratio >= target else 'NOT met'}"
        )
    rate = common_rate(results)
    if rate is not None:
        figures = ", ".join(
            f"{name_of(r)} p50 {step_at(r, rate).percentile(0.5) * 1e3:.1f} ms, "
            f"p99 {step_at(r, rate).percentile(0.99) * 1e3:.1f} ms"
            for r in results
        )
        print(
            f"at {rate:,.4g} msg/s ({rate * args.clients:,.0f} deliveries/s), sustained by both: "
            f"{figures}" + (f" (target: p99 < {p99_target * 1e3:.0f} ms)" if p99_target else "")
        )
    print("\nEvery step:\n")
    print("| setup | rate, msg/s | deliveries/s | delivered | p50 ms | p99 ms | cut off |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        for s in result.steps:
            share = len(s.delays) / max(1, s.expected(result.clients))
            print(
                f"| {name_of(result)} | {s.rate:,.1f} | {s.delivered_per_s:,.0f} | {share:.1%} | "
                f"{s.percentile(0.5) * 1e3:.1f} | {s.percentile(0.99) * 1e3:.1f} | {s.closed} |"
            )


def plot(
    results: list[Result],
    args: argparse.Namespace,
    log_rates: bool = False,
    p99_line: float = TARGET_P99,
) -> None:
    """Deliveries against the offered rate, delay percentiles, and the delays' CDF at the
    highest rate all sustained (rates on log axes with *log_rates*: setups far apart), with a
    dashed line at *p99_line* seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (rates, tails, cdf) = plt.subplots(1, 3, figsize=(14, 4.2))
    thousands = FuncFormatter(lambda value, _: f"{value / 1000:g}k")
    if log_rates:
        rates.set_xscale("log")
        rates.set_yscale("log")
        tails.set_xscale("log")
    for axis in (rates.xaxis, rates.yaxis, tails.xaxis):
        axis.set_major_formatter(thousands)
    common = common_rate(results)
    top = max(s.rate * r.clients for r in results for s in r.steps)
    for result in results:
        steps = sorted(result.steps, key=lambda s: s.rate)
        xs = [s.rate * result.clients for s in steps]
        delivered = [s.delivered_per_s for s in steps]
        line = rates.plot(xs, delivered, marker="o", label=name_of(result))[0]
        tails.plot(
            xs, [s.percentile(0.99) * 1e3 for s in steps], marker="o", color=line.get_color(),
            label=f"{name_of(result)} p99",
        )  # fmt: skip
        tails.plot(
            xs, [s.percentile(0.5) * 1e3 for s in steps], marker=".", linestyle=":",
            color=line.get_color(), label=f"{name_of(result)} p50",
        )  # fmt: skip
        if common is not None:
            ordered = step_at(result, common).delays
            n = len(ordered)
            stride = max(1, n // 2000)
            cdf.plot(
                [*(d * 1e3 for d in ordered[::stride]), ordered[-1] * 1e3],
                [*(i / n for i in range(0, n, stride)), 1.0],
                color=line.get_color(),
                label=name_of(result),
            )
    low = min(s.rate * r.clients for r in results for s in r.steps) if log_rates else 0
    rates.plot([low, top], [low, top], color="grey", linewidth=0.8, linestyle="--",
               label="offered")  # fmt: skip
    rates.set_xlabel("deliveries/s offered (rate x clients)")
    rates.set_ylabel("deliveries/s that arrived")
    rates.legend(fontsize=8)
    rates.grid(True, alpha=0.3)
    rates.set_title(f"{args.clients} clients in one room, one publisher", fontsize=10)
    tails.axhline(p99_line * 1e3, color="grey", linestyle="--", linewidth=0.8)
    tails.set_yscale("log")
    tails.set_xlabel("deliveries/s offered")
    tails.set_ylabel("delivery delay, ms (log)")
    tails.legend(fontsize=7)
    tails.grid(True, which="both", alpha=0.3)
    tails.set_title(f"delay percentiles (dashed: {p99_line * 1e3:.0f} ms)", fontsize=10)
    if common is not None:
        cdf.axvline(p99_line * 1e3, color="grey", linestyle="--", linewidth=0.8)
        cdf.set_xscale("log")
        cdf.set_xlabel("delivery delay, ms (log)")
        cdf.set_ylabel("fraction of deliveries")
        cdf.grid(True, which="both", alpha=0.3)
        cdf.legend(fontsize=8, loc="lower right")
        cdf.set_title(f"at {common:,.4g} msg/s, sustained by both", fontsize=10)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        helper, *rest = sys.argv[1:]
        if helper == "_publisher":
            run_publisher(int(rest[0]))
        elif helper == "_admit":
            run_admit(int(rest[0]))
        elif helper == "_load":
            run_load(int(rest[0]), int(rest[1]), Path(rest[2]))
        else:
            sys.exit(f"unknown helper {helper}")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="WebSocket clients in the room")
    parser.add_argument("--duration", type=float, help="seconds per step (default 5)")
    parser.add_argument("--first-rate", type=float, default=5.0, help="messages/s of step 1")
    parser.add_argument("--refine", type=int, help="bisection steps (default 2; --quick 1)")
    parser.add_argument("--max-rate", type=float, default=5000.0, help="no step above this")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--grace", type=float, default=0.5, help="seconds after each step")
    parser.add_argument(
        "--plot", type=Path, default=HERE.parent / "docs" / "images" / "cluster.png"
    )
    parser.add_argument("--quick", action="store_true", help="2 s steps")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.refine is None:
        args.refine = 1 if args.quick else 2
    if not two_cpus():
        print("one CPU: processes are not pinned", file=sys.stderr)
    load_before = os.getloadavg()[0]
    results = [run_setup(1, args), run_setup(2, args)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\n{cpus} CPU(s); 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print_table(results, args, target=1.6)
    plot(results, args)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
