"""Redis client benchmark: what a round trip and a pipelined load cost, for each way of talking
to Redis from this project.

    python benchmarks/redis_client.py            # full run (about two minutes)
    python benchmarks/redis_client.py --quick    # a smoke run (seconds)

Starts its own ``redis-server`` (Debian's package, ``apt-get install redis-server``) on a free
loopback port, without persistence, and stops it at the end. Contenders:

- ``strands_trio.redis``: our client, on trio streams with hiredis's parser and packer: two
  tasks per connection own the socket (a writer and a reader), callers queue and wait;
- ``hiredis, callers do I/O``: the other design we considered, a prototype defined below:
  no task of its own, each caller writes its command under one lock and reads replies under
  another until its own has come (the lock holder hands the others' replies over);
- ``coredis under trio``: coredis (anyio-based) run by ``trio.run``; and the same under
  ``asyncio.run``, to tell coredis's own costs from those of anyio's trio backend;
- ``redis-py asyncio``: ``redis.asyncio`` under ``asyncio.run``, for reference (it uses hiredis
  to parse when hiredis is installed, as here).

Workloads, each on one client opened per round: round trips one after the other (``PING``;
``SET`` then ``GET``; ``EVALSHA`` of a one-line script), in microseconds per call; then
throughput with 1, 10 and 100 tasks sharing the client, each looping on ``GET``, in calls per
second (concurrent tasks pipeline on a shared connection, or take connections from a pool).
Rounds are interleaved (every contender once per round, in turn) and the median of the rounds
is reported. Probes: the connections each client opened on the server, the threads running
while it ran, and which async library coredis's tasks really run on.

Prints a table and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from importlib.util import find_spec
from typing import Any

import attrs
import hiredis
import trio
from _common import (
    HOST,
    IMAGES,
    Options,
    Spread,
    interleaved_rounds,
    note,
    pyplot,
    redis_server,
    save_figure,
)

from strands_trio.redis import Script, open_redis

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
VALUE = b"v" * 32
SEQUENTIAL = ("PING", "SET+GET", "EVALSHA")
CONCURRENCY = (1, 10, 100)
THROUGHPUT = tuple(f"{n} task{'s' if n > 1 else ''}" for n in CONCURRENCY)


# -- the server ---------------------------------------------------------------------------


def command(port: int, *args: str) -> Any:
    """One command on a fresh blocking connection (setup and probes, never timed)."""
    reader = hiredis.Reader()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(hiredis.pack_command(args))
        while (reply := reader.gets()) is False:
            reader.feed(sock.recv(65536))
    return reply


def connections_opened(port: int) -> int:
    info = command(port, "INFO", "stats").decode()
    line = next(x for x in info.splitlines() if x.startswith("total_connections_received:"))
    return int(line.split(":")[1]) - 1  # minus the probe's own


# -- the contenders: each opens a client and gives the workloads four calls -------------


class Calls:
    """What the workloads call: ``ping()``, ``set(k, v)``, ``get(k)``, ``evalsha(k)``."""

    ping: Callable[[], Awaitable[Any]]
    set: Callable[[str, bytes], Awaitable[Any]]
    get: Callable[[str], Awaitable[Any]]
    evalsha: Callable[[str], Awaitable[Any]]
    probe: str = ""


@contextlib.asynccontextmanager
async def ours(port: int) -> AsyncIterator[Calls]:
    script = Script(SCRIPT)
    async with open_redis(f"redis://127.0.0.1:{port}") as redis:
        calls = Calls()
        execute = redis.execute
        calls.ping = lambda: execute("PING")
        calls.set = lambda k, v: execute("SET", k, v)
        calls.get = lambda k: execute("GET", k)
        calls.evalsha = lambda k: script(redis, keys=[k], args=[1])
        yield calls


class CallersDoIO:
    """The design we did not pick (a prototype): no task of its own; a caller writes its
    command (and any queued before it) under the write lock, then reads under the read lock
    until its own reply has come, handing over the replies of the calls before it. Not safe
    against cancellation in the middle of a write, which would leave half a command on the
    wire: the reason it was not picked, whatever the figures say."""

    _NONE = object()

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = hiredis.Reader(notEnoughData=self._NONE)
        self.write_lock = trio.Lock()
        self.read_lock = trio.Lock()
        self.unsent: list[bytes] = []
        self.waiting: deque[list[Any]] = deque()

    async def execute(self, *args: Any) -> Any:
        slot = [self._NONE]
        self.unsent.append(hiredis.pack_command(args))
        self.waiting.append(slot)
        async with self.write_lock:
            if self.unsent:
                data, self.unsent = b"".join(self.unsent), []
                await self.stream.send_all(data)
        async with self.read_lock:
            while slot[0] is self._NONE:
                self.reader.feed(await self.stream.receive_some())
                while (reply := self.reader.gets()) is not self._NONE:
                    self.waiting.popleft()[0] = reply
        if isinstance(slot[0], hiredis.ReplyError):
            raise slot[0]
        return slot[0]


@contextlib.asynccontextmanager
async def callers_do_io(port: int) -> AsyncIterator[Calls]:
    sha = Script(SCRIPT).sha1
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        execute = CallersDoIO(stream).execute
        calls = Calls()
        calls.ping = lambda: execute("PING")
        calls.set = lambda k, v: execute("SET", k, v)
        calls.get = lambda k: execute("GET", k)
        calls.evalsha = lambda k: execute("EVALSHA", sha, 1, k, 1)
        yield calls


@contextlib.asynccontextmanager
async def coredis_any(port: int) -> AsyncIterator[Calls]:
    import coredis
    import sniffio

    sha = Script(SCRIPT).sha1
    async with coredis.Redis(host="127.0.0.1", port=port) as client:
        calls = Calls()
        calls.ping = client.ping
        calls.set = client.set
        calls.get = client.get
        calls.evalsha = lambda k: client.evalsha(sha, keys=[k], args=[1])
        await client.ping()
        group = client.connection_pool.task_group
        calls.probe = (
            f"coredis {coredis.__version__}: sniffio says {sniffio.current_async_library()}, "
            f"its task group is {type(group).__module__}.{type(group).__name__}"
        )
        yield calls


@contextlib.asynccontextmanager
async def redis_py(port: int) -> AsyncIterator[Calls]:
    import redis
    import redis.asyncio
    from redis.utils import HIREDIS_AVAILABLE

    sha = Script(SCRIPT).sha1
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    try:
        calls = Calls()
        calls.ping = client.ping
        calls.set = client.set
        calls.get = client.get
        calls.evalsha = lambda k: client.evalsha(sha, 1, k, 1)
        calls.probe = f"redis-py {redis.__version__}: hiredis parser {HIREDIS_AVAILABLE}"
        yield calls
    finally:
        await client.aclose()


#: name -> (how to open a client, "trio" or "asyncio", the module it needs)
CONTENDERS: dict[str, tuple[Callable[[int], Any], str, str]] = {
    "strands_trio.redis": (ours, "trio", "hiredis"),
    "hiredis, callers do I/O": (callers_do_io, "trio", "hiredis"),
    "coredis under trio": (coredis_any, "trio", "coredis"),
    "coredis under asyncio": (coredis_any, "asyncio", "coredis"),
    "redis-py asyncio": (redis_py, "asyncio", "redis"),
}


# -- the workloads --------------------------------------------------------------------------


async def run_tasks(library: str, count: int, fn: Callable[[], Awaitable[None]]) -> None:
    if library == "trio":
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(fn)
    else:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(fn())


async def session(
    open_client: Callable[[int], Any], library: str, port: int, calls_per_run: int
) -> tuple[dict[str, float], str, int]:
    """One client: every workload once. Returns the figures, the probe and the most threads
    seen running."""
    threads = threading.active_count()
    figures: dict[str, float] = {}
    async with open_client(port) as calls:
        for _ in range(200):  # warm up: connections made, scripts cached
            await calls.ping()
        await calls.set("k", VALUE)
        await calls.evalsha("n")
        n = calls_per_run
        start = time.perf_counter()
        for _ in range(n):
            await calls.ping()
        figures["PING"] = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n // 2):
            await calls.set("k", VALUE)
            await calls.get("k")
        figures["SET+GET"] = (time.perf_counter() - start) / (n // 2 * 2) * 1e6
        start = time.perf_counter()
        for _ in range(n):
            await calls.evalsha("n")
        figures["EVALSHA"] = (time.perf_counter() - start) / n * 1e6
        threads = max(threads, threading.active_count())
        for tasks, workload in zip(CONCURRENCY, THROUGHPUT, strict=True):
            total = n * 4
            each = total // tasks

            async def loop(each: int = each) -> None:
                for _ in range(each):
                    await calls.get("k")

            start = time.perf_counter()
            await run_tasks(library, tasks, loop)
            figures[workload] = each * tasks / (time.perf_counter() - start)
            threads = max(threads, threading.active_count())
        return figures, calls.probe, threads


@attrs.frozen
class Run:
    """One client's session: every workload once, and the probes."""

    figures: dict[str, float]  # workload -> µs per call, or calls per second
    probe: str
    threads: int  # the most seen running
    opened: int  # connections the client opened on the server

    def show(self) -> str:
        """The run's line on stderr."""
        figures = self.figures
        return f"PING {figures['PING']:.0f} us, 100 tasks {figures['100 tasks']:,.0f}/s"


def measure(port: int, calls_per_run: int, name: str, label: str) -> Run:
    """One session of contender *name* on the server at *port*."""
    open_client, library, _ = CONTENDERS[name]
    before = connections_opened(port)
    if library == "trio":
        figures, probe, threads = trio.run(session, open_client, library, port, calls_per_run)
    else:
        figures, probe, threads = asyncio.run(session(open_client, library, port, calls_per_run))
    return Run(figures, probe, threads, connections_opened(port) - before - 1)


# -- report ---------------------------------------------------------------------------------


def plot(medians: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    plt = pyplot()
    names = list(medians)
    colors = ["#55a868", "#8172b2", "#c44e52", "#dd8452", "#4c72b0"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    panels = [
        (left, list(SEQUENTIAL), "microseconds per call, one after the other (lower is better)"),
        (right, list(THROUGHPUT), "calls per second, GET (higher is better)"),
    ]
    for ax, workloads, label in panels:
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(workloads))]
            values = [medians[name][w] for w in workloads]
            bars = ax.bar(xs, values, width, label=name, color=colors[i % len(colors)])
            for bar, value in zip(bars, values, strict=True):
                text = f"{value:.0f}" if value < 1000 else f"{value / 1000:.0f}k"
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height(),
                    text,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_ylabel(label, fontsize=8)
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle("Redis on loopback: one client per contender, median of interleaved rounds")
    save_figure(fig, args.plot)


def main() -> None:
    options = Options(__doc__, quick="2 rounds of 300 calls")
    options.add_rounds(7, 2)
    options.add_mode(
        "--calls", full=2000, quick=300, type=int, help="sequential calls per workload"
    )
    options.add_plot(IMAGES / "redis_client.png")
    args = options.parse()

    contenders = [name for name, (_, _, module) in CONTENDERS.items() if find_spec(module)]
    for name in CONTENDERS.keys() - set(contenders):
        print(f"{name}: not installed, skipped (pip install {CONTENDERS[name][2]})")
    with redis_server() as port:
        version = command(port, "INFO", "server").split(b"redis_version:")[1].split()[0]
        note(f"redis-server {version.decode()} on {HOST}:{port}")
        command(port, "SCRIPT", "LOAD", SCRIPT)
        run = partial(measure, port, args.calls)
        runs = interleaved_rounds(contenders, args.rounds, run, Run.show)

    workloads = [*SEQUENTIAL, *THROUGHPUT]
    medians = {
        name: {w: Spread.of(r.figures[w] for r in rounds).median for w in workloads}
        for name, rounds in runs.items()
    }
    print(
        f"\nRedis on loopback, median of {args.rounds} interleaved rounds: microseconds per "
        f"call ({args.calls} calls one after the other), then GET calls per second with N "
        "tasks sharing one client"
    )
    header = f"{'workload':10s}" + "".join(f" {name:>24s}" for name in contenders)
    print(header)
    for w in workloads:
        unit = "us" if w in SEQUENTIAL else "/s"
        cells = "".join(
            f" {medians[name][w]:>21,.0f} {unit}"
            if unit == "/s"
            else f" {medians[name][w]:>21.1f} {unit}"
            for name in contenders
        )
        print(f"{w:10s}{cells}")
    print()
    for name in contenders:
        last = runs[name][-1]
        line = (
            f"{name}: {last.opened} connection(s) opened per round, "
            f"at most {max(r.threads for r in runs[name])} thread(s) running"
        )
        print(line + (f"; {last.probe}" if last.probe else ""))

    plot(medians, args)


if __name__ == "__main__":
    main()
