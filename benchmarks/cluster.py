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
whose queue filled), then bisects between the last sustained rate and the failed one. A
setup's result is its best sustained step: deliveries per second, and that step's delays; the
delays are also compared at the highest rate both setups sustained. With two CPUs, a 1-node
broker is pinned to CPU 0, the two nodes to CPU 0 and 1; load generators, publisher and Redis
float. The share of each step's window that each process ran on a CPU, and waited for one
(``/proc/PID/task/*/schedstat``), says which one was the bottleneck. Between steps, the load
generators report once no message has come for 0.25 s, so that an overloaded step's backlog
does not spill into the next.

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from array import array
from pathlib import Path

import attrs
from broker import (
    READY_LINE,
    START_TIMEOUT,
    Processes,
    cpu_times,
    http_get_json,
    processes,
    read_line,
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
        buf = buffers[fd] + data
        while len(buf) >= 2:
            opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, offset = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + length:
                break
            payload, buf = buf[offset : offset + length], buf[offset + length :]
            if opcode == 8:
                state["closed"] += 1
                poll.unregister(fd)
                return
            try:
                step_text, sent_text, _ = payload.split(b" ", 2)
                step, sent = int(step_text), float(sent_text)
            except ValueError:
                state["bad"] += 1
                continue
            samples = delays.get(step)
            if samples is None:
                samples = delays[step] = array("d")
            samples.append(now - sent)
        buffers[fd] = buf

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

    @property
    def delivered_per_s(self) -> float:
        return len(self.delays) / self.seconds

    def expected(self, clients: int) -> int:
        return self.sent * clients

    def percentile(self, q: float) -> float:
        d = self.delays
        return d[min(len(d) - 1, int(q * len(d)))] if d else math.nan

    def good(self, clients: int) -> bool:
        """Sustained: (nearly) every delivery arrived, no client was cut off."""
        return len(self.delays) >= GOOD_SHARE * self.expected(clients) and not self.closed


@attrs.frozen
class Result:
    nodes: int
    steps: list[Step]
    clients: int

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
    procs: Processes, name: str, cpu: int | None, clients: int, redis_url: str | None
) -> tuple[int, int]:
    command = [
        sys.executable, "-m", "strands_trio", "broker",
        "--ws-host", "127.0.0.1", "--ws-port", "0", "--tcp-port", "0",
        "--max-connections", str(clients + 100),
        "--max-connections-per-ip", str(clients + 100),
        "--log-level", "WARNING",
    ]  # fmt: skip
    if redis_url:
        command += ["--redis", redis_url, "--node-id", name]
    procs.start(name, command, cpu=cpu, nofile=clients + 200)
    log = procs.dir / f"{name}.log"
    match = wait_for(f"{name} to listen", lambda: READY_LINE.search(log.read_bytes()), procs, 20)
    assert isinstance(match, re.Match)
    return int(match[1]), int(match[2])


def run_setup(nodes: int, args: argparse.Namespace) -> Result:
    """Start one setup's processes, run its steps, stop it."""
    label = f"{nodes} node{'s' if nodes > 1 else ''}"
    with processes() as procs:
        redis_url = start_redis(procs) if nodes > 1 else None
        cpus = [0, 1] if two_cpus() else [None, None]
        ports = [
            start_node(procs, f"node{i}", cpus[i], args.clients, redis_url) for i in range(nodes)
        ]
        publisher = procs.start(
            "publisher",
            [sys.executable, str(THIS), "_publisher", str(ports[0][1])],
            cpu=None,
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
                    cpu=None,
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
        pids = {name: proc.pid for name, proc in procs._procs if name != "redis" or nodes > 1}

        number = 0

        def step(rate: float, seconds: float) -> Step:
            nonlocal number
            number += 1
            for i, load in enumerate(loads):  # the previous step's backlog has drained
                assert load.stdin is not None
                load.stdin.write(b"quiet\n")
                load.stdin.flush()
                answer = read_line(load, time.monotonic() + 60)
                if answer.strip() != "quiet":
                    raise RuntimeError(f"load{i} said {answer!r}")
            before = {name: cpu_times(pid) for name, pid in pids.items()}
            started = time.monotonic()
            assert publisher.stdin is not None
            publisher.stdin.write(f"run {number} {rate} {seconds}\n".encode())
            publisher.stdin.flush()
            line = read_line(publisher, time.monotonic() + seconds + 30).split()
            elapsed = time.monotonic() - started
            cpu = {}
            for name, pid in pids.items():
                running, waiting = cpu_times(pid)
                cpu[name] = (
                    100 * (running - before[name][0]) / elapsed,
                    100 * (waiting - before[name][1]) / elapsed,
                )
            time.sleep(args.grace)  # stragglers of this step still count: they carry its number
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
            return Step(rate, seconds, int(line[2]), array("d", sorted(delays)), cpu, closed)

        def show(s: Step) -> None:
            verdict = "good" if s.good(args.clients) else "FAILED"
            busy = ", ".join(f"{name} {run:.0f}/{wait:.0f}" for name, (run, wait) in s.cpu.items())
            print(
                f"{label}: {s.rate:,.0f} msg/s -> {s.delivered_per_s:,.0f} deliveries/s "
                f"({len(s.delays) / max(1, s.expected(args.clients)):.1%} of expected), "
                f"p99 {s.percentile(0.99) * 1e3:.1f} ms: {verdict}"
                + (f", {s.closed} clients cut off" if s.closed else "")
                + f"  [% on CPU/waiting: {busy}]",
                file=sys.stderr,
            )

        print(f"{label}: warm-up", file=sys.stderr)
        step(args.first_rate, 1.0)
        steps: list[Step] = []
        rate, good, bad = args.first_rate, None, None
        while len(steps) < args.max_steps and rate <= args.max_rate:
            s = step(rate, args.duration)
            steps.append(s)
            show(s)
            if s.good(args.clients):
                good, rate = rate, rate * 2
            else:
                bad = rate
                break
        for _ in range(args.refine):  # bisect between the last good rate and the failed one
            if good is None or bad is None or steps[-1].closed:
                break  # clients were cut off: the room is not what it was
            middle = (good + bad) / 2
            s = step(middle, args.duration)
            steps.append(s)
            show(s)
            if s.good(args.clients):
                good = middle
            else:
                bad = middle
        for load in loads:
            assert load.stdin is not None
            load.stdin.close()
            load.wait(60)
        procs.report_complaints(*(f"node{i}" for i in range(nodes)))
        return Result(nodes, steps, args.clients)


# ---------------------------------------------------------------------- report


def common_rate(results: list[Result]) -> float | None:
    """The highest rate that every setup sustained (to compare latencies at equal load)."""
    rates = [{s.rate for s in r.steps if s.good(r.clients)} for r in results]
    both = set.intersection(*rates) if rates else set()
    return max(both) if both else None


def step_at(result: Result, rate: float) -> Step:
    return next(s for s in result.steps if s.rate == rate)


def name_of(result: Result) -> str:
    return f"{result.nodes} node{'s' if result.nodes > 1 else ''}"


def print_table(results: list[Result], args: argparse.Namespace) -> None:
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
            f"| {name_of(result)} | {best.rate:,.0f} | {best.delivered_per_s:,.0f} | "
            f"{best.percentile(0.5) * 1e3:.1f} | {best.percentile(0.99) * 1e3:.1f} | {busy} |"
        )
    one, two = (r.best for r in results)
    if one and two:
        print(
            f"\n2 nodes / 1 node: {two.delivered_per_s / one.delivered_per_s:.2f}x deliveries "
            "per second sustained (target: 1.6x)"
        )
    rate = common_rate(results)
    if rate is not None:
        figures = ", ".join(
            f"{name_of(r)} p50 {step_at(r, rate).percentile(0.5) * 1e3:.1f} ms, "
            f"p99 {step_at(r, rate).percentile(0.99) * 1e3:.1f} ms"
            for r in results
        )
        print(
            f"at {rate:,.0f} msg/s ({rate * args.clients:,.0f} deliveries/s), sustained by both: "
            f"{figures} (target: p99 < {TARGET_P99 * 1e3:.0f} ms)"
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


def plot(results: list[Result], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (rates, tails, cdf) = plt.subplots(1, 3, figsize=(14, 4.2))
    thousands = FuncFormatter(lambda value, _: f"{value / 1000:g}k")
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
    rates.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--", label="offered")
    rates.set_xlabel("deliveries/s offered (rate x clients)")
    rates.set_ylabel("deliveries/s that arrived")
    rates.legend(fontsize=8)
    rates.grid(True, alpha=0.3)
    rates.set_title(f"{args.clients} clients in one room, one publisher", fontsize=10)
    tails.axhline(TARGET_P99 * 1e3, color="grey", linestyle="--", linewidth=0.8)
    tails.set_yscale("log")
    tails.set_xlabel("deliveries/s offered")
    tails.set_ylabel("delivery delay, ms (log)")
    tails.legend(fontsize=7)
    tails.grid(True, which="both", alpha=0.3)
    tails.set_title(f"delay percentiles (dashed: {TARGET_P99 * 1e3:.0f} ms)", fontsize=10)
    if common is not None:
        cdf.axvline(TARGET_P99 * 1e3, color="grey", linestyle="--", linewidth=0.8)
        cdf.set_xscale("log")
        cdf.set_xlabel("delivery delay, ms (log)")
        cdf.set_ylabel("fraction of deliveries")
        cdf.grid(True, which="both", alpha=0.3)
        cdf.legend(fontsize=8, loc="lower right")
        cdf.set_title(f"at {common:,.0f} msg/s, sustained by both", fontsize=10)
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
    print_table(results, args)
    plot(results, args)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
