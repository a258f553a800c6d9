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
import contextlib
import json
import math
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
BACKENDS = HERE / "_backends.py"
WSLOAD = HERE / "_wsload.py"
START_TIMEOUT = 20.0  # seconds for a broker or backend to be ready
RUN_MARGIN = 45.0  # seconds a load generator may take beyond its warm-up and duration

SERVERS = HERE / "_servers.py"
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
#: The contenders that are a bare echo server (``_servers.py KIND``): no broker, no backend.
SERVER_OF = {
    "adapter": "adapter",
    "adapter-deflate": "adapter-deflate",
    "ws-echo": "trio-websocket",
}
CEILING = "adapter"
#: The targets against the ceiling: throughput at least, p99 at most.
TARGET_THROUGHPUT, TARGET_P99 = 0.75, 1.5
TARGET_MEMORY_KIB = 15.0  # per idle connection
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
NAN2 = (math.nan, math.nan)
MEMORY_LABELS = {
    "strands": "strands-trio broker",
    "previous": "previous broker",
    "reference": "reference broker",
}
COMPLAINT = re.compile(r"WARNING|ERROR|Traceback|panic")
READY_LINE = re.compile(rb"ws://[^:]+:(\d+)/ws/\.\.\., backends on [^ ]+:(\d+)")


# ---------------------------------------------------------------------- processes


def two_cpus() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def set_up_child(cpu: int | None, nofile: int = 0) -> Callable[[], None]:
    """A ``preexec_fn``: pin the child to *cpu* (with two CPUs) and raise its open-file limit
    to *nofile* (up to the hard limit)."""

    def preexec() -> None:
        if cpu is not None and two_cpus():
            os.sched_setaffinity(0, {cpu})
        if nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft < nofile:
                limit = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    return preexec


class Processes:
    """The subprocesses of one run, each logging to a file; all killed by :meth:`close`."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="broker-bench-")
        self.dir = Path(self._dir.name)
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._services: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        command: list[str],
        *,
        cpu: int | None,
        nofile: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout: int | None = None,
        stdin: int | None = subprocess.DEVNULL,
        service: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start *command* as *name* (in *cwd* if given); a *service* (a broker, backend or
        server) is expected to run until killed: :meth:`check_alive` fails if it has exited."""
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log if stdout is None else None,  # the load generator's progress line
                env=env,
                cwd=cwd,
                preexec_fn=set_up_child(cpu, nofile),
            )
        self._procs.append((name, proc))
        if service:
            self._services.append((name, proc))
        return proc

    def log(self, name: str, lines: int = 15) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_bytes().decode(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {name}| {line}" for line in tail)

    def complaints(self, name: str) -> list[str]:
        """The lines of *name*'s log that look like warnings or errors."""
        path = self.dir / f"{name}.log"
        if not path.exists():
            return []
        text = path.read_bytes().decode(errors="replace")
        return [line for line in text.splitlines() if COMPLAINT.search(line)]

    def report_complaints(self, *names: str) -> None:
        """Print (on stderr) how many warnings each process logged, and the first ones."""
        for name in names:
            lines = self.complaints(name)
            if lines:
                print(f"  {name} logged {len(lines)} warning(s)/error(s):", file=sys.stderr)
                for line in lines[:3]:
                    print(f"    {line[:160]}", file=sys.stderr)

    def check_alive(self) -> None:
        for name, proc in self._services:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.log(name)}")

    def close(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.kill()
        for _, proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._dir.cleanup()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, ready: Callable[[], object], procs: Processes, timeout: float) -> object:
    """Poll *ready* until it returns something truthy; fail after *timeout* seconds or as
    soon as one of the processes exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result:
            return result
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_get_json(port: int, path: str) -> dict[str, object] | None:
    """The JSON body of ``GET path`` on loopback, or ``None`` if it cannot be had."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    result: dict[str, object] = json.loads(body)
    return result


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_times(pid: int) -> tuple[float, float]:
    """Seconds process *pid* has spent on a CPU, and runnable but waiting for one (its
    threads' ``schedstat``: on this shared machine the second one says whether a figure is
    limited by the work or by the neighbours)."""
    running = waiting = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            on_cpu, queued, _ = (task / "schedstat").read_text().split()
            running += int(on_cpu) / 1e9
            waiting += int(queued) / 1e9
    except (OSError, ValueError):  # no schedstat: CPU time from stat, waiting unknown
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), float("nan")
    return running, waiting


# ---------------------------------------------------------------------- brokers


@attrs.frozen
class Broker:
    proc: subprocess.Popen[bytes]
    ws_port: int
    tcp_port: int
    has_healthz: bool


def tree_env(tree: Path | None) -> tuple[dict[str, str] | None, Path | None]:
    """The environment and working directory that run ``python -m strands_trio`` from the
    source *tree* (``None``: this one, as installed)."""
    if tree is None:
        return None, None
    return {**os.environ, "PYTHONPATH": str(tree)}, tree


def check_tree(tree: Path) -> None:
    """Fail unless ``strands_trio`` imports from *tree* when run with :func:`tree_env`."""
    env, cwd = tree_env(tree)
    where = subprocess.run(
        [sys.executable, "-c", "import strands_trio; print(strands_trio.__file__)"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if not where.stdout.strip().startswith(str(tree.resolve())):
        sys.exit(f"{tree}: strands_trio does not import from there: {where.stdout}{where.stderr}")


def start_strands_broker(
    procs: Processes,
    *,
    max_connections: int,
    nofile: int = 0,
    tree: Path | None = None,
    name: str = "broker",
    cpu: int | None = 0,
    extra: tuple[str, ...] = (),
) -> Broker:
    """Start a broker as *name* (``python -m strands_trio broker``, from the source *tree* if
    given, with the *extra* flags) and wait until it listens."""
    env, cwd = tree_env(tree)
    command = [
        sys.executable, "-m", "strands_trio", "broker",
        "--ws-host", "127.0.0.1", "--ws-port", "0", "--tcp-port", "0",
        "--max-connections", str(max_connections),
        "--max-connections-per-ip", str(max_connections),
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    proc = procs.start(name, command, cpu=cpu, nofile=nofile, env=env, cwd=cwd)
    log = procs.dir / f"{name}.log"

    def ports() -> re.Match[bytes] | None:
        return READY_LINE.search(log.read_bytes())

    match = wait_for(f"{name} to listen", ports, procs, START_TIMEOUT)
    assert isinstance(match, re.Match)
    return Broker(proc, int(match[1]), int(match[2]), has_healthz=True)


def start_reference_broker(procs: Processes, binary: str, *, nofile: int = 0) -> Broker:
    ws_port, tcp_port = free_port(), free_port()
    env = {**os.environ, "PYSTRAND_WS_PORT": str(ws_port), "PYSTRAND_TCP_PORT": str(tcp_port)}
    proc = procs.start("broker", [binary], cpu=0, nofile=nofile, env=env)
    wait_for("the reference broker to listen", lambda: accepts(ws_port), procs, START_TIMEOUT)
    return Broker(proc, ws_port, tcp_port, has_healthz=False)


def start_backend(
    procs: Processes, kind: str, broker: Broker, *extra: str
) -> subprocess.Popen[bytes]:
    """Start an echo backend of *kind* (``benchmarks/_backends.py``, with the *extra*
    arguments) and wait until the broker has it (the reference broker has no ``/healthz``: then
    the load generator's handshakes are retried until it is there)."""
    proc = procs.start(
        "backend", [sys.executable, str(BACKENDS), kind, str(broker.tcp_port), *extra], cpu=1
    )
    if broker.has_healthz:

        def connected() -> bool:
            health = http_get_json(broker.ws_port, "/healthz")
            return bool(health and health["backends"])

        wait_for("the backend to connect", connected, procs, START_TIMEOUT)
    else:
        time.sleep(1.0)
    return proc


def start_echo_server(procs: Processes, kind: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start the echo server *kind* of ``_servers.py`` on CPU 0; returns it and its port."""
    command = [sys.executable, str(SERVERS), kind]
    proc = procs.start("echo", command, cpu=0, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = read_line(proc, time.monotonic() + START_TIMEOUT)
    if not line.strip().isdigit():
        raise RuntimeError(f"the echo server said {line!r}\n{procs.log('echo')}")
    return proc, int(line)


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The next line *proc* writes on its stdout (``""`` at its end), waiting until
    *deadline* (``time.monotonic()``) at most."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        raise RuntimeError("timed out waiting for a subprocess")
    return proc.stdout.readline().decode()


# ---------------------------------------------------------------------- ping-pong


@attrs.frozen
class Round:
    rate: float  # round trips per second
    samples: array[float]  # round-trip times, seconds, sorted
    #: process name -> % of the timed window it ran on a CPU, and waited for one
    cpu: dict[str, tuple[float, float]]

    def percentile(self, q: float) -> float:
        ordered = self.samples
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_pingpong(kind: str, args: argparse.Namespace, label: str) -> Round:
    with processes() as procs:
        watched: dict[str, int] = {}
        if kind in SERVER_OF:
            echo, port = start_echo_server(procs, SERVER_OF[kind])
            watched["server"] = echo.pid
        else:
            if kind.startswith("reference"):
                broker = start_reference_broker(procs, args.reference_binary)
            else:
                tree = args.previous if kind == "previous" else None
                extra = ("--compression",) if kind in DEFLATE else ()
                broker = start_strands_broker(
                    procs, max_connections=args.clients + 100, tree=tree, extra=extra
                )
            backend = start_backend(procs, BACKEND_OF[kind], broker)
            watched |= {"broker": broker.proc.pid, "backend": backend.pid}
            port = broker.ws_port
        out = procs.dir / "samples.bin"
        command = [
            sys.executable, str(WSLOAD), "pingpong", str(port),
            "--clients", str(args.clients), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--out", str(out), "--label", label,
            *(["--deflate"] if kind in DEFLATE else []),
        ]  # fmt: skip
        load = procs.start("load", command, cpu=1, stdout=subprocess.PIPE, service=False)
        watched["load"] = load.pid
        deadline = time.monotonic() + args.warmup + args.duration + RUN_MARGIN
        marks: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}
        summary: dict[str, object] = {}
        while not summary:
            line = read_line(load, deadline).strip()
            if not line:
                procs.check_alive()
                raise RuntimeError(f"the load generator exited\n{procs.log('broker')}")
            if line in ("start", "end"):
                marks[line] = (time.monotonic(), {n: cpu_times(p) for n, p in watched.items()})
            elif line.startswith("{"):
                summary = json.loads(line)
        load.wait(timeout=10)
        problems = [
            f"{key} = {summary[key]}"
            for key in ("mismatches", "closed_early", "timed_out", "stuck", "lost", "closes")
            if summary[key]
        ]
        if summary["connected"] != args.clients:
            problems.append(f"{summary['connected']} of {args.clients} clients connected: ")
            problems.append(", ".join(summary["connect_failures"]))  # type: ignore[arg-type]
        if problems:
            logs = "\n".join(procs.log(name) for name in ("broker", "backend", "echo"))
            raise RuntimeError(f"{kind}: " + "; ".join(problems) + "\n" + logs)
        samples = array("d")
        samples.frombytes(out.read_bytes())
        samples = array("d", sorted(samples))
        procs.report_complaints("broker", "backend", "echo")
    cpu: dict[str, tuple[float, float]] = {}
    if "start" in marks and "end" in marks:
        (t0, before), (t1, after) = marks["start"], marks["end"]
        for name in watched:
            (ran0, waited0), (ran1, waited1) = before[name], after[name]
            cpu[name] = (100 * (ran1 - ran0) / (t1 - t0), 100 * (waited1 - waited0) / (t1 - t0))
    return Round(len(samples) / args.duration, samples, cpu)


def interleaved_rounds(kinds: list[str], args: argparse.Namespace) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {kind: [] for kind in kinds}
    for round_no in range(1, args.rounds + 1):
        for kind in kinds:
            result = run_pingpong(kind, args, f"{kind} {round_no}/{args.rounds}")
            results[kind].append(result)
            cpu = " ".join(
                f"{name} {ran:.0f}/{waited:.0f}" for name, (ran, waited) in result.cpu.items()
            )
            print(
                f"round {round_no}/{args.rounds}  {kind:10s} {result.rate:10,.0f} msg/s  "
                f"p99 {result.percentile(0.99) * 1e3:6.2f} ms  CPU/wait %: {cpu}",
                file=sys.stderr,
            )
    return results


# ---------------------------------------------------------------------- memory


@attrs.frozen
class Memory:
    connections: int
    before_kib: int
    after_kib: int
    backend_before_kib: int
    backend_after_kib: int
    open_seconds: float
    close_seconds: float  # until /healthz counted none (NaN: unknown)
    #: VmRSS with each later batch of as many, each opened once the one before had closed
    later_kib: list[int]

    @property
    def per_connection_kib(self) -> float:
        return (self.after_kib - self.before_kib) / self.connections

    @property
    def backend_per_connection_kib(self) -> float:
        return (self.backend_after_kib - self.backend_before_kib) / self.connections


def open_idle(procs: Processes, name: str, port: int, count: int) -> subprocess.Popen[bytes]:
    """Open *count* idle WebSocket connections from a load-generator process; returns it once
    they are all open (close its stdin to let it close them and exit)."""
    command = [sys.executable, str(WSLOAD), "idle", str(port), "--connections", str(count)]
    load = procs.start(
        name,
        command,
        cpu=1,
        nofile=count + 1024,
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        service=False,
    )
    line = read_line(load, time.monotonic() + 150).strip()
    if line != f"ready {count}":
        raise RuntimeError(f"the load generator could not open {count} connections: {line}")
    return load


def measure_memory(args: argparse.Namespace, kind: str = "strands") -> Memory:
    """The memory of the broker of *kind* (``strands``, ``previous`` or ``reference``)."""
    count = args.connections
    nofile = count + 1024
    with processes() as procs:
        if kind == "reference":
            broker = start_reference_broker(procs, args.reference_binary, nofile=nofile)
        else:
            tree = args.previous if kind == "previous" else None
            broker = start_strands_broker(
                procs, max_connections=count + 100, nofile=nofile, tree=tree
            )
        backend = start_backend(procs, "strands", broker)

        def connections(n: int) -> Callable[[], bool]:
            def check() -> bool:
                health = http_get_json(broker.ws_port, "/healthz")
                return bool(health and health["connections"] == n)

            return check

        # Warm-up: a few connections opened and closed, so that "before" includes the code
        # paths and first allocations of a connection.
        warm = open_idle(procs, "warm-up", broker.ws_port, 20)
        assert warm.stdin is not None
        warm.stdin.close()
        warm.wait(timeout=15)
        if broker.has_healthz:
            wait_for("the warm-up connections to close", connections(0), procs, 15)
        time.sleep(0.5)
        before, backend_before = vm_kib(broker.proc.pid), vm_kib(backend.pid)
        readings: list[tuple[int, int, float]] = []  # (broker KiB, backend KiB, open seconds)
        closed = math.nan
        # Later batches, each opened once the one before has closed, show a leak if any.
        for batch in range(1, args.batches + 1):
            started = time.monotonic()
            load = open_idle(procs, f"idle-{batch}", broker.ws_port, count)
            opened = time.monotonic() - started
            if broker.has_healthz:
                wait_for(f"/healthz to count {count} connections", connections(count), procs, 30)
            time.sleep(1.0)
            readings.append((vm_kib(broker.proc.pid), vm_kib(backend.pid), opened))
            procs.check_alive()
            assert load.stdin is not None
            load.stdin.close()
            started = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                load.wait(timeout=15)
            if broker.has_healthz:
                wait_for("the connections to close", connections(0), procs, 30)
                closed = time.monotonic() - started
            else:
                time.sleep(3.0)
        procs.report_complaints("broker", "backend")
    (after, backend_after, open_seconds), *later = readings
    return Memory(
        count, before, after, backend_before, backend_after, open_seconds, closed,
        [kib for kib, _, _ in later],
    )  # fmt: skip


# ---------------------------------------------------------------------- report


def percentile_ms(rounds: list[Round], q: float) -> float:
    """The median over rounds of each round's percentile *q*, in ms."""
    return statistics.median(r.percentile(q) for r in rounds) * 1e3


def paired_ratio(
    results: dict[str, list[Round]], kind: str, other: str, value: Callable[[Round], float]
) -> float:
    """The median over rounds of *kind*'s *value* over *other*'s in the same round (the pairs
    measured close in time, the noise of the machine cancels best)."""
    if kind not in results or other not in results:
        return math.nan
    pairs = zip(results[kind], results[other], strict=True)
    return statistics.median(value(a) / value(b) if value(b) else math.nan for a, b in pairs)


def rate(r: Round) -> float:
    return r.rate


def p99(r: Round) -> float:
    return r.percentile(0.99)


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    medians = {kind: statistics.median(r.rate for r in rounds) for kind, rounds in results.items()}
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
        rates = [r.rate for r in rounds]
        print(
            f"{LABELS[kind]:44s} {medians[kind]:8,.0f} {min(rates):8,.0f} {max(rates):8,.0f} "
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
            ran = statistics.median(r.cpu.get(name, NAN2)[0] for r in rounds)
            waited = statistics.median(r.cpu.get(name, NAN2)[1] for r in rounds)
            micros = statistics.median(
                r.cpu.get(name, NAN2)[0] / 100 * 1e6 / r.rate if r.rate else math.nan
                for r in rounds
            )
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


def micros_of(name: str) -> Callable[[Round], float]:
    """*name*'s CPU time per round trip in a round, µs."""

    def micros(r: Round) -> float:
        return r.cpu.get(name, NAN2)[0] / 100 * 1e6 / r.rate if r.rate else math.nan

    return micros


def print_memory(memory: Memory, what: str) -> None:
    verdict = "met" if memory.per_connection_kib <= TARGET_MEMORY_KIB else "NOT met"
    print(
        f"\nMemory, {what}: {memory.connections:,} idle WebSocket connections "
        f"(opened in {memory.open_seconds:.1f} s): broker VmRSS {memory.before_kib / 1024:.1f} MiB"
        f" -> {memory.after_kib / 1024:.1f} MiB: {memory.per_connection_kib:.1f} KiB per "
        f"connection (the StrandsClient backend: {memory.backend_per_connection_kib:.2f} KiB "
        "per connection)"
    )
    closing = (
        "" if math.isnan(memory.close_seconds) else f"closed in {memory.close_seconds:.1f} s; "
    )
    if memory.later_kib:
        growth = ", ".join(
            f"{(kib - memory.after_kib) / memory.connections:+.1f}" for kib in memory.later_kib
        )
        rss = ", ".join(f"{kib / 1024:.1f}" for kib in memory.later_kib)
        print(
            f"  {closing}{len(memory.later_kib)} later batch(es) of {memory.connections:,}, each "
            f"once the one before had closed: VmRSS {rss} MiB ({growth} KiB per connection over "
            "the first batch: a leak would grow with each)"
        )
    if what != "reference broker":
        print(
            f"  {memory.per_connection_kib:.1f} KiB per connection (target <= "
            f"{TARGET_MEMORY_KIB:g} KiB): {verdict}"
        )


def plot(results: dict[str, list[Round]], memory: Memory | None, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    kinds = list(results)
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for kind in kinds:
        ordered = sorted(s * 1e3 for r in results[kind] for s in r.samples)
        if not ordered:
            continue
        n = len(ordered)
        step = max(1, n // 2000)  # a few thousand points draw the same curve
        xs = [*ordered[::step], ordered[-1]]
        ys = [*(i / n for i in range(0, n, step)), 1.0]
        cdf.plot(xs, ys, label=LABELS[kind], color=colors[kind])
        p99 = percentile_ms(results[kind], 0.99)
        cdf.axvline(p99, color=colors[kind], linestyle=":", linewidth=1)
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    cdf.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set_xlabel("round-trip latency, ms (log; rounds pooled; dotted: median p99)")
    cdf.set_ylabel("fraction of round trips")
    cdf.set_ylim(0, 1.01)
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    cdf.set_title(f"Latency CDF, {args.clients} clients in ping-pong", fontsize=10)

    medians = [statistics.median(r.rate for r in results[k]) for k in kinds]
    low = [m - min(r.rate for r in results[k]) for m, k in zip(medians, kinds, strict=True)]
    high = [max(r.rate for r in results[k]) - m for m, k in zip(medians, kinds, strict=True)]
    drawn = bars.barh(kinds, medians, xerr=[low, high], color=[colors[k] for k in kinds])
    for bar, kind, value in zip(drawn, kinds, medians, strict=True):
        top = max(r.rate for r in results[kind])
        ratio = paired_ratio(results, kind, CEILING, rate)
        text = f"{value:,.0f}/s" + ("" if math.isnan(ratio) else f" ({ratio:.2f}x)")
        bars.text(top * 1.03, bar.get_y() + bar.get_height() / 2, text, va="center")
    bars.invert_yaxis()
    bars.set_xlabel("round trips per second (median; bars: min to max)")
    bars.set_xlim(0, max(r.rate for rounds in results.values() for r in rounds) * 1.45)
    title = f"Throughput, {args.rounds} interleaved round(s); (x the {CEILING} echo)"
    if memory:
        title += f"\nbroker memory: {memory.per_connection_kib:.1f} KiB per idle connection"
    bars.set_title(title, fontsize=10)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="WebSocket clients in ping-pong")
    parser.add_argument("--duration", type=float, help="timed seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds before timing (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per contender (default 3)")
    parser.add_argument(
        "--contenders",
        default=None,
        help="comma-separated, from: " + ", ".join(LABELS) + " (default: adapter,strands,"
        "raw,pystrands,ws-echo,adapter-deflate,strands-deflate; previous with --previous, "
        "reference with --reference-binary)",
    )
    parser.add_argument(
        "--previous", type=Path, help="a source tree whose broker to compare (default: none)"
    )
    parser.add_argument("--reference-binary", help="the reference Go broker's executable")
    parser.add_argument(
        "--connections", type=int, help="idle connections for memory (default 3000; 0: skip)"
    )
    parser.add_argument(
        "--batches", type=int, default=2,
        help="batches of idle connections, one after the other (default 2: the second "
        "shows a leak)",
    )  # fmt: skip
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "broker.png")
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs, 1 round, 500 idle connections"
    )
    args = parser.parse_args()
    # --quick: 2 s runs, 1 round, 500 idle connections; explicit flags win.
    quick = {"warmup": 0.5, "duration": 2.0, "rounds": 1, "connections": 500}
    full = {"warmup": 2.0, "duration": 10.0, "rounds": 3, "connections": 3000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 0:
        parser.error("--clients, --duration and --rounds must be positive, --warmup >= 0")
    if args.connections < 0 or args.batches < 1:
        parser.error("--connections must be >= 0, --batches at least 1")
    if args.reference_binary and not os.access(args.reference_binary, os.X_OK):
        parser.error(f"--reference-binary {args.reference_binary}: not an executable file")
    if args.previous is not None:
        check_tree(args.previous)
    if args.contenders is None:
        kinds = ["adapter", "strands", "raw", "pystrands", "ws-echo"]
        kinds += ["adapter-deflate", "strands-deflate"]
        if args.previous:
            kinds.insert(2, "previous")
        if args.reference_binary:
            kinds.insert(2, "reference")
    else:
        kinds = [k for k in args.contenders.split(",") if k]
    for kind in kinds:
        if kind not in LABELS:
            parser.error(f"unknown contender {kind!r}: choose from {', '.join(LABELS)}")
        if kind.startswith("reference") and not args.reference_binary:
            parser.error(f"{kind} needs --reference-binary PATH")
        if kind == "previous" and not args.previous:
            parser.error("previous needs --previous DIR")
    if not two_cpus():
        print("one CPU: processes are not pinned", file=sys.stderr)

    load_before = os.getloadavg()[0]
    results = interleaved_rounds(kinds, args) if kinds and args.rounds else {}
    memories: dict[str, Memory] = {}
    if args.connections:
        given = {"strands": True, "previous": args.previous, "reference": args.reference_binary}
        for kind in [kind for kind, wanted in given.items() if wanted]:
            print(f"memory: {kind}, {args.connections:,} idle connections", file=sys.stderr)
            memories[kind] = measure_memory(args, kind)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinning = ", broker pinned to CPU 0, backend and load generator to CPU 1" if two_cpus() else ""
    print(
        f"\n{cpus} CPU(s){pinning}; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after "
        "(a busy machine shows in the 'waiting' figures)"
    )
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
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
