"""``broker.py``'s memory measure: the broker's resident memory per idle WebSocket connection.

A broker and an accepting backend; the broker's VmRSS is read, N idle WebSocket connections
are opened from a load-generator process (``_wsload.py idle``), the broker's ``/healthz`` is
polled until it counts them, VmRSS is read again: (after - before) / N. Then more batches as
large (``--batches``), each once the one before has closed: their VmRSS shows a leak, if any.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import time

import attrs
from _brokers import start_backend, start_reference_broker, start_strands_broker, wait_healthz
from _common import Processes, processes, read_line, vm_kib
from _loadgen import start_wsload

TARGET_MEMORY_KIB = 15.0  # per idle connection
OPEN_TIMEOUT = 150.0  # seconds for a load generator to open all its connections


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
    load = start_wsload(
        procs, name, "idle", port, "--connections", str(count),
        nofile=count + 1024, stdin=subprocess.PIPE,
    )  # fmt: skip
    line = read_line(load, time.monotonic() + OPEN_TIMEOUT).strip()
    if line != f"ready {count}":
        raise RuntimeError(f"the load generator could not open {count} connections: {line}")
    return load


def close_idle(load: subprocess.Popen[bytes]) -> None:
    """Let the load generator of :func:`open_idle` close its connections and exit."""
    assert load.stdin is not None
    load.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        load.wait(timeout=15)


def measure_memory(args: argparse.Namespace, kind: str = "strands") -> Memory:
    """The memory of the broker of *kind* (``strands``, ``previous`` or ``reference``), with
    ``args.connections`` idle connections in each of ``args.batches`` batches."""
    count = args.connections
    nofile = count + 1024
    with processes("broker-bench-") as procs:
        if kind == "reference":
            broker = start_reference_broker(procs, args.reference_binary, nofile=nofile)
        else:
            tree = args.previous if kind == "previous" else None
            broker = start_strands_broker(
                procs, max_connections=count + 100, nofile=nofile, tree=tree
            )
        backend = start_backend(procs, "strands", broker)

        def counted(n: int, what: str, timeout: float) -> None:
            """Wait until the broker counts *n* connections (if it can say)."""
            if broker.has_healthz:
                wait_healthz(procs, broker.ws_port, what, lambda h: h["connections"] == n, timeout)

        # Warm-up: a few connections opened and closed, so that "before" includes the code
        # paths and first allocations of a connection.
        close_idle(open_idle(procs, "warm-up", broker.ws_port, 20))
        counted(0, "the warm-up connections to close", 15)
        time.sleep(0.5)
        before, backend_before = vm_kib(broker.proc.pid), vm_kib(backend.pid)
        readings: list[tuple[int, int, float]] = []  # (broker KiB, backend KiB, open seconds)
        closed = math.nan
        # Later batches, each opened once the one before has closed, show a leak if any.
        for batch in range(1, args.batches + 1):
            started = time.monotonic()
            load = open_idle(procs, f"idle-{batch}", broker.ws_port, count)
            opened = time.monotonic() - started
            counted(count, f"/healthz to count {count} connections", 30)
            time.sleep(1.0)
            readings.append((vm_kib(broker.proc.pid), vm_kib(backend.pid), opened))
            procs.check_alive()
            started = time.monotonic()
            close_idle(load)
            if broker.has_healthz:
                counted(0, "the connections to close", 30)
                closed = time.monotonic() - started
            else:
                time.sleep(3.0)
        procs.report_complaints("broker", "backend")
    (after, backend_after, open_seconds), *later = readings
    return Memory(
        count, before, after, backend_before, backend_after, open_seconds, closed,
        [kib for kib, _, _ in later],
    )  # fmt: skip


def print_memory(memory: Memory, what: str) -> None:
    """The table's lines for *memory*, the broker's called *what*."""
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
