"""The replay benchmarks' fake broker (``replay.py``, ``middleware.py``; ``codec.py`` times the
same frames): this process listens on loopback, starts a backend of ``_backends.py`` in a
process of its own pinned to CPU 1, blasts blocks of ``new_message`` frames from
:data:`CLIENTS` distinct clients (with the reference broker's nested metadata) and times until
as many replies are back.

Theory of operation: a thread writes the blocks while this one counts the reply lines, so that
neither side waits for the other; the time runs from the first frame sent to the last reply
received. A first run of two blocks warms the backend up (imports, first allocations).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from functools import partial

import orjson
from _common import (
    HERE,
    HOST,
    Options,
    child_setup,
    clear_progress,
    interleaved_rounds,
    peak_kib,
    pin,
    progress,
)

BACKENDS = HERE / "_backends.py"
CLIENTS = 100
BLOCK = 1000  # frames per pre-encoded block: 10 from each client
STALL_LIMIT = 60.0  # seconds without a reply before a run is abandoned
ACCEPT_TIMEOUT = 30.0  # seconds for the backend to connect


def frame_block(
    *, identity: bool = False, size: int = 0, count: int = BLOCK, clients: int = CLIENTS
) -> bytes:
    """*count* ``new_message`` frames, from *clients* clients in turn. With *identity*, each
    connection's metadata also holds what the Auth middleware leaves there: the identity it
    verified. With *size*, each message is that many bytes (``"message number N"`` otherwise)."""
    lines = []
    for i in range(count):
        client = f"client-{i % clients}"
        inner: dict[str, object] = {"user": client, "role": "member"}
        if identity:
            inner["identity"] = {"subject": client, "roles": ["member"], "claims": {}}
        context = {
            "client_id": client,
            "room_id": "bench",
            "metadata": {
                "accepted": True,
                "client_id": client,
                "room_id": "bench",
                "metadata": inner,
            },
        }
        frame = {
            "request_id": f"00000000-0000-4000-8000-{i:012d}",
            "action": "new_message",
            "params": {
                "context": context,
                "message": "x" * size if size else f"message number {i}",
            },
        }
        lines.append(orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(lines)


class FakeBroker:
    """One backend process of *kind* (``_backends.py KIND PORT EXTRA...``), connected to this
    fake broker; :meth:`close` stops it."""

    def __init__(self, kind: str, *extra: str) -> None:
        self.listener = socket.create_server((HOST, 0))
        port = self.listener.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKENDS), kind, str(port), *extra],
            preexec_fn=child_setup(1),
        )
        self.listener.settimeout(ACCEPT_TIMEOUT)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(STALL_LIMIT)

    def replay(self, block: bytes, blocks: int, label: str = "", per_block: int = BLOCK) -> float:
        """Send *blocks* blocks of *per_block* frames, wait for every reply; return the seconds
        it took (with a progress line on stderr if *label*)."""
        expected = blocks * per_block
        failure: list[BaseException] = []

        def send() -> None:
            try:
                for _ in range(blocks):
                    self.conn.sendall(block)
            except OSError as exc:
                failure.append(exc)

        start = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = 0
        next_report = time.monotonic() + 1
        while received < expected:
            try:
                data = self.conn.recv(1 << 20)
            except TimeoutError:
                raise RuntimeError(f"no reply for {STALL_LIMIT:g} s") from None
            if not data:
                raise RuntimeError("the backend closed the connection")
            received += data.count(b"\n")
            if label and time.monotonic() > next_report:
                next_report += 1
                progress(f"{label}: {received:,}/{expected:,}")
        elapsed = time.perf_counter() - start
        sender.join()
        if failure:
            raise RuntimeError(f"send failed: {failure[0]}")
        if label:
            clear_progress()
        return elapsed

    def peak_mb(self) -> float:
        """The backend's peak resident memory so far, MB (NaN if it is gone)."""
        return peak_kib(self.proc.pid) / 1024

    def close(self) -> float:
        """Stop the backend; return its peak resident memory, MB."""
        peak = self.peak_mb()
        self.conn.close()
        self.listener.close()
        self.proc.kill()
        self.proc.wait()
        return peak


def measure(kind: str, label: str, *, block: bytes, events: int) -> float:
    """Events per second of a fresh backend of *kind*, *events* of *block*'s frames."""
    broker = FakeBroker(kind)
    try:
        broker.replay(block, 2)  # warm-up: imports, first allocations
        seconds = broker.replay(block, events // BLOCK, label=label)
    finally:
        broker.close()
    return events / seconds


def show(rate: float) -> str:
    """A run's line on stderr."""
    return f"{rate:12,.0f} events/s"


def add_events(options: Options, flag: str, *, full: int, quick: int, help: str) -> None:
    """A number of events, a multiple of :data:`BLOCK`: *full*, or *quick* with ``--quick``."""
    options.add_mode(flag, full=full, quick=quick, type=int, help=help)
    dest = flag.lstrip("-").replace("-", "_")

    def check(args: argparse.Namespace) -> None:
        if getattr(args, dest) % BLOCK:
            options.error(f"{flag} must be a multiple of {BLOCK}")

    options.validate(check)


def add_options(options: Options, known: Iterable[str], default: str) -> None:
    """``--events``, ``--rounds`` and ``--contenders`` (of *known*), for :func:`run_rounds`."""
    add_events(options, "--events", full=200_000, quick=20_000, help="events per timed run")
    options.add_rounds(3, 1)
    options.add_contenders(known, default)


def run_rounds(args: argparse.Namespace, block: bytes) -> dict[str, list[float]]:
    """The events per second of each backend kind of ``args.kinds``, ``args.events`` of
    *block*'s frames per run, in ``args.rounds`` interleaved rounds (this process pinned to
    CPU 0, the backends to CPU 1)."""
    pin(0)
    run = partial(measure, block=block, events=args.events)
    return interleaved_rounds(args.kinds, args.rounds, run, show)


def flood(
    block: bytes, events: int, sleep: float, per_block: int = BLOCK
) -> tuple[float, float, float]:
    """(idle MB, peak MB, seconds) of the resident memory of a backend whose handler sleeps
    *sleep* seconds, under a flood of *events* (*block* holds *per_block* of them)."""
    broker = FakeBroker("flood", str(sleep))
    try:
        broker.replay(frame_block(count=1), 1, per_block=1)  # warm-up, small
        idle = broker.peak_mb()
        seconds = broker.replay(block, events // per_block, label="flood", per_block=per_block)
    finally:
        peak = broker.close()
    return idle, peak, seconds
