"""Broker benchmark: WebSocket ping-pong through the broker and an echo backend, end to end,
and the broker's resident memory per idle WebSocket connection.

    python benchmarks/broker.py            # full run (about 3 minutes)
    python benchmarks/broker.py --quick    # a smoke run (seconds)
    python benchmarks/broker.py --reference-binary PATH   # also the reference Go broker

Ping-pong: a load-generator process (``benchmarks/_wsload.py pingpong``, trio-websocket) opens
N WebSocket clients; each sends a message, waits for its echo, records the round trip and
sends the next, for a fixed duration after a short warm-up. Contenders, each as separate
processes, in interleaved rounds (the machine is shared and noisy; the median is reported):

- ``strands``: our broker (``python -m strands_trio broker``) + a ``StrandsClient`` backend
  that answers each ``new_message`` with ``send_private_message`` to its sender;
- ``pystrands``: our broker + the same backend written with the asyncio ``pystrands`` client;
- ``raw``: our broker + a blocking socket loop with orjson and no framework
  (``_backends.py raw-broker``): the backend's cost almost removed, what the broker alone allows;
- ``ws-echo``: a plain trio-websocket echo server: no broker, no backend (the ceiling of the
  WebSocket layer and of the load generator);
- ``reference``: the reference Go broker (``--reference-binary``; ``PYSTRAND_WS_PORT`` and
  ``PYSTRAND_TCP_PORT``) + the ``StrandsClient`` backend (``reference-pystrands``: with the
  pystrands one).

With two CPUs the broker (or the echo server) is pinned to CPU 0, the backend and the load
generator to CPU 1. For each process the share of the timed window it spent on a CPU and
waiting for one (``/proc/PID/task/*/schedstat``) is reported too: the first says which process
is the bottleneck, the second how much the machine's other work got in the way. The load
generator is Python too: the ``ws-echo`` row is the most it can drive.

Memory: our broker and an accepting backend; the broker's VmRSS is read, 5,000 idle WebSocket
connections are opened from a load-generator process (``_wsload.py idle``), the broker's
``/healthz`` is polled until it counts them, VmRSS is read again: (after - before) / 5,000.

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

LABELS = {
    "strands": "strands-trio broker + StrandsClient",
    "pystrands": "strands-trio broker + pystrands",
    "raw": "strands-trio broker + raw socket loop",
    "ws-echo": "trio-websocket echo (ceiling)",
    "reference": "reference Go broker + StrandsClient",
    "reference-pystrands": "reference Go broker + pystrands",
}
BACKEND_OF = {
    "strands": "strands",
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
        stdout: int | None = None,
        stdin: int | None = subprocess.DEVNULL,
        service: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start *command* as *name*; a *service* (a broker, backend or server) is expected to
        run until killed: :meth:`check_alive` fails if it has exited."""
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log if stdout is None else None,  # the load generator's progress line
                env=env,
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


def start_strands_broker(procs: Processes, *, max_connections: int, nofile: int = 0) -> Broker:
    command = [
        sys.executable, "-m", "strands_trio", "broker",
        "--ws-host", "127.0.0.1", "--ws-port", "0", "--tcp-port", "0",
        "--max-connections", str(max_connections),
        "--max-connections-per-ip", str(max_connections),
        "--log-level", "WARNING",
    ]  # fmt: skip
    proc = procs.start("broker", command, cpu=0, nofile=nofile)
    log = procs.dir / "broker.log"

    def ports() -> re.Match[bytes] | None:
        return READY_LINE.search(log.read_bytes())

    match = wait_for("the broker to listen", ports, procs, START_TIMEOUT)
    assert isinstance(match, re.Match)
    return Broker(proc, int(match[1]), int(match[2]), has_healthz=True)


def start_reference_broker(procs: Processes, binary: str, *, nofile: int = 0) -> Broker:
    ws_port, tcp_port = free_port(), free_port()
    env = {**os.environ, "PYSTRAND_WS_PORT": str(ws_port), "PYSTRAND_TCP_PORT": str(tcp_port)}
    proc = procs.start("broker", [binary], cpu=0, nofile=nofile, env=env)
    wait_for("the reference broker to listen", lambda: accepts(ws_port), procs, START_TIMEOUT)
    return Broker(proc, ws_port, tcp_port, has_healthz=False)


def start_backend(procs: Processes, kind: str, broker: Broker) -> subprocess.Popen[bytes]:
    """Start an echo backend of *kind* (``benchmarks/_backends.py``) and wait until the broker
    has it (the reference broker has no ``/healthz``: then the load generator's handshakes are
    retried until it is there)."""
    proc = procs.start(
        "backend", [sys.executable, str(BACKENDS), kind, str(broker.tcp_port)], cpu=1
    )
    if broker.has_healthz:

        def connected() -> bool:
            health = http_get_json(broker.ws_port, "/healthz")
            return bool(health and health["backends"])

        wait_for("the backend to connect", connected, procs, START_TIMEOUT)
    else:
        time.sleep(1.0)
    return proc


def start_echo_server(procs: Processes) -> tuple[subprocess.Popen[bytes], int]:
    proc = procs.start("echo", [sys.executable, str(WSLOAD), "echo"], cpu=0, stdout=subprocess.PIPE)
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
        if kind == "ws-echo":
            echo, port = start_echo_server(procs)
            watched["server"] = echo.pid
        else:
            if kind.startswith("reference"):
                broker = start_reference_broker(procs, args.reference_binary)
            else:
                broker = start_strands_broker(procs, max_connections=args.clients + 100)
            backend = start_backend(procs, BACKEND_OF[kind], broker)
            watched |= {"broker": broker.proc.pid, "backend": backend.pid}
            port = broker.ws_port
        out = procs.dir / "samples.bin"
        command = [
            sys.executable, str(WSLOAD), "pingpong", str(port),
            "--clients", str(args.clients), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--out", str(out), "--label", label,
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
            else:
                summary = json.loads(line)
        load.wait(timeout=10)
        problems = [
            f"{key} = {summary[key]}"
            for key in ("mismatches", "closed_early", "timed_out")
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
    again_kib: int  # with a second batch of as many, opened once the first had closed

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


def measure_memory(args: argparse.Namespace, reference: bool = False) -> Memory:
    count = args.connections
    nofile = count + 1024
    with processes() as procs:
        if reference:
            broker = start_reference_broker(procs, args.reference_binary, nofile=nofile)
        else:
            broker = start_strands_broker(procs, max_connections=count + 100, nofile=nofile)
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
        # Twice: the second batch, opened once the first has closed, shows a leak if any.
        for batch in (1, 2):
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
    (after, backend_after, open_seconds), (again, _, _) = readings
    return Memory(count, before, after, backend_before, backend_after, open_seconds, closed, again)


# ---------------------------------------------------------------------- report


def percentile_ms(rounds: list[Round], q: float) -> float:
    """The median over rounds of each round's percentile *q*, in ms."""
    return statistics.median(r.percentile(q) for r in rounds) * 1e3


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    medians = {kind: statistics.median(r.rate for r in rounds) for kind, rounds in results.items()}
    ours = medians.get("strands")
    print(
        f"\nBroker ping-pong: {args.clients} WebSocket clients, {args.duration:g} s timed after "
        f"{args.warmup:g} s warm-up, {args.rounds} interleaved round(s); median of rounds"
    )
    print(
        f"{'contender':38s} {'msg/s':>8s} {'min':>8s} {'max':>8s} {'/strands':>8s} "
        f"{'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s}"
    )
    for kind, rounds in results.items():
        rates = [r.rate for r in rounds]
        ratio = medians[kind] / ours if ours else float("nan")
        print(
            f"{LABELS[kind]:38s} {medians[kind]:8,.0f} {min(rates):8,.0f} {max(rates):8,.0f} "
            f"{ratio:8.2f} {percentile_ms(rounds, 0.50):7.2f} {percentile_ms(rounds, 0.95):7.2f} "
            f"{percentile_ms(rounds, 0.99):7.2f}"
        )
    print(
        "\nCPU time per round trip (µs; the figure a busy machine disturbs least), and the "
        "share of the\ntimed window each process spent on a CPU / waiting for one (%)"
    )
    names = ("broker", "backend", "server", "load")
    print(f"{'contender':38s} " + " ".join(f"{name:>18s}" for name in names))
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
        print(f"{LABELS[kind]:38s} " + " ".join(cells))
    if "reference" in results and ours:
        throughput = medians["strands"] / medians["reference"]
        p99 = percentile_ms(results["strands"], 0.99) / percentile_ms(results["reference"], 0.99)
        verdict = "met" if throughput >= 1 and p99 <= 1.5 else "NOT met"
        print(
            f"\nstrands vs reference (same backend): throughput {throughput:.2f}x (target >= 1), "
            f"p99 {p99:.2f}x (target <= 1.5): {verdict}"
        )
    elif not args.reference_binary:
        print(f"\n{NO_REFERENCE}")


def print_memory(memory: Memory, what: str) -> None:
    print(
        f"\nMemory, {what}: {memory.connections:,} idle WebSocket connections "
        f"(opened in {memory.open_seconds:.1f} s): broker VmRSS {memory.before_kib / 1024:.1f} MiB"
        f" -> {memory.after_kib / 1024:.1f} MiB: {memory.per_connection_kib:.1f} KiB per "
        f"connection (the StrandsClient backend: {memory.backend_per_connection_kib:.2f} KiB "
        "per connection)"
    )
    growth = (memory.again_kib - memory.after_kib) / memory.connections
    closing = (
        "" if math.isnan(memory.close_seconds) else f"closed in {memory.close_seconds:.1f} s; "
    )
    print(
        f"  {closing}a second batch of {memory.connections:,}, once those had closed: VmRSS "
        f"{memory.again_kib / 1024:.1f} MiB ({growth:+.1f} KiB per connection over the first "
        "batch: a leak would show here)"
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
        bars.text(top * 1.03, bar.get_y() + bar.get_height() / 2, f"{value:,.0f}/s", va="center")
    bars.invert_yaxis()
    bars.set_xlabel("round trips per second (median; bars: min to max)")
    bars.set_xlim(0, max(r.rate for rounds in results.values() for r in rounds) * 1.3)
    title = f"Throughput, {args.rounds} interleaved round(s)"
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
        help="comma-separated, from: " + ", ".join(LABELS) + " (default: strands,pystrands,"
        "raw,ws-echo, and reference with --reference-binary)",
    )
    parser.add_argument("--reference-binary", help="the reference Go broker's executable")
    parser.add_argument(
        "--connections", type=int, help="idle connections for memory (default 5000; 0: skip)"
    )
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "broker.png")
    parser.add_argument(
        "--quick", action="store_true", help="2 s runs, 1 round, 500 idle connections"
    )
    args = parser.parse_args()
    # --quick: 2 s runs, 1 round, 500 idle connections; explicit flags win.
    quick = {"warmup": 0.5, "duration": 2.0, "rounds": 1, "connections": 500}
    full = {"warmup": 2.0, "duration": 10.0, "rounds": 3, "connections": 5000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 0:
        parser.error("--clients, --duration and --rounds must be positive, --warmup >= 0")
    if args.connections < 0:
        parser.error("--connections must be >= 0")
    if args.reference_binary and not os.access(args.reference_binary, os.X_OK):
        parser.error(f"--reference-binary {args.reference_binary}: not an executable file")
    if args.contenders is None:
        kinds = ["strands", "pystrands", "raw", "ws-echo"]
        if args.reference_binary:
            kinds.insert(1, "reference")
    else:
        kinds = [k for k in args.contenders.split(",") if k]
    for kind in kinds:
        if kind not in LABELS:
            parser.error(f"unknown contender {kind!r}: choose from {', '.join(LABELS)}")
        if kind.startswith("reference") and not args.reference_binary:
            parser.error(f"{kind} needs --reference-binary PATH")
    if not two_cpus():
        print("one CPU: processes are not pinned", file=sys.stderr)

    load_before = os.getloadavg()[0]
    results = interleaved_rounds(kinds, args) if kinds and args.rounds else {}
    memory = reference_memory = None
    if args.connections:
        memory = measure_memory(args)
        if args.reference_binary:
            reference_memory = measure_memory(args, reference=True)

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
    if memory:
        print_memory(memory, "strands-trio broker")
    if reference_memory:
        print_memory(reference_memory, "reference broker")
    if results:
        plot(results, memory, args)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
