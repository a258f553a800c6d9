"""WebSocket load generators (picows clients) for the benchmarks, each run in its own process:

    python benchmarks/_wsload.py pingpong PORT --clients N --warmup S --duration S --out FILE
                                 [--path P] [--firehose K] [--label L] [--deflate]
                                 [--straggler S] [--late] [--format echo|typed|call]
    python benchmarks/_wsload.py fanout PORT --clients N --duration S [--warmup S] [--out FILE]
    python benchmarks/_wsload.py flood PORT --size BYTES --duration S
    python benchmarks/_wsload.py idle PORT --connections N

Every client is a picows connection (a compiled WebSocket core on asyncio; on uvloop when it is
installed), all the clients of a mode in one event loop driven by callbacks. In ping-pong the
load generator's process spends about 12 µs of CPU per round trip, its kernel's share of the
two loopback sockets included: half of what the leanest Trio echo server spends
(``benchmarks/websocket.py``), a fifth of trio-websocket's.

- ``pingpong``: N clients, each sending a message, waiting for its echo and sending the next,
  for ``--warmup`` then ``--duration`` seconds; ``--firehose K`` keeps K messages in flight per
  client instead of one (pipelined; the echoes are matched in order). Prints ``connected N``
  once every client is connected, ``start`` and ``end`` on stdout at the bounds of the timed
  window, then a JSON summary line (with every message sent and every echo received, warm-up
  included: a message the server lost is one sent and never echoed, even ``--straggler``
  seconds after the window); the round-trip times of the messages sent and answered inside the
  window go to ``--out`` (float64 seconds, native byte order; with ``--late``, those of the
  messages sent in the window and answered after it too: a stall at the end is not left out).
  ``--deflate``: the clients offer permessage-deflate and fail unless the server accepts it
  (see below). ``--format``: what a message is and what answers it (:data:`FORMATS`): ``echo``
  (the text itself), ``typed`` (``{"type":"ping","text":...}`` answered by a ``pong``) or
  ``call`` (``{"type":"echo","ref":N,"text":...}`` answered by the ``reply`` with that ref, as
  ``strands.js``'s ``call()`` sends them): ``benchmarks/replies.py``.
- ``fanout``: N receivers, each its own connection, print ``ready N`` once all are connected,
  then count what a publisher (another process) sends them. Each message is text
  ``"<time_ns> <seq> <padding>"``: ``time.time_ns()`` at its sending (the wall clock, the one
  clock two processes agree on) and a sequence number rising by one per message. ``start`` and
  ``end`` bound the counted window as in ``pingpong``; the summary has the deliveries per
  second, each receiver's count, the losses (gaps in a receiver's sequence), the p50/p99
  delivery latency; latencies go to ``--out`` if given.
- ``flood``: one client sending ``--size``-byte text messages as fast as the server takes them
  (it stops writing while the TCP send buffer is over asyncio's high-water mark) and reading
  and discarding what comes back, for ``--duration`` seconds or until the server closes;
  summary: messages sent and how it ended (the close code and reason if closed).
- ``idle``: open N connections (a bounded number of handshakes at a time, a refused one retried
  until the deadline), print ``ready N`` on stdout, then hold them idle until stdin closes.

The echo servers they measure are ``benchmarks/_servers.py``'s.

Progress goes to stderr. A client closed by the server reports it (``closes``: code and reason)
instead of waiting; every mode is bounded in time and ends by itself.

picows, as used here: ``WSTransport.send`` never blocks, so backpressure is the asyncio
protocol's ``pause_writing``/``resume_writing``, which picows forwards to the listener (and
logs a warning for when the listener does not define them). picows does not answer a close
frame: the listener must (``Client.on_ws_frame``). A connection the server drops during the
handshake comes back from ``ws_connect`` already disconnected, not as an error. picows does not
negotiate permessage-deflate (RFC 7692) either, but lets a client send the offer
(``extra_headers``), read the server's answer (``transport.response``) and set or read a
frame's RSV1 bit: :class:`Deflate` does the rest with zlib, on this side of the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import threading
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import picows
from _common import HOST, clear_progress, note, percentile, progress, raise_nofile
from picows import WSCloseCode, WSListener, WSMsgType

PATH = "/ws/bench"
CONNECT_DEADLINE = 20.0  # seconds for every client to be connected
HANDSHAKE_TIMEOUT = 10.0  # seconds for one attempt
RETRY_DELAY = 0.2
STRAGGLER_TIMEOUT = 1.0  # seconds after the window for the last replies (default)
CLOSE_TIMEOUT = 1.0
MAX_FRAME = 64 * 2**20  # bytes: the most a client accepts in one frame


# ---------------------------------------------------------------------- permessage-deflate

DEFLATE_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate")
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 section 7.2.1: stripped by the sender


class Deflate:
    """The client's half of permessage-deflate, once the server accepted the offer: each
    message compressed with one raw-deflate stream per direction (context takeover unless the
    server's answer says otherwise).

    Args:
        answer: The server's ``Sec-WebSocket-Extensions`` header.
    """

    def __init__(self, answer: str) -> None:
        params = {p.strip().split("=")[0] for p in answer.split(";")[1:]}
        self.reset = "client_no_context_takeover" in params
        self._compressor = zlib.compressobj(wbits=-15)
        self._decompressor = zlib.decompressobj(wbits=-15)

    @staticmethod
    def negotiated(transport: Any) -> Deflate | None:
        """The extension as the server's answer on *transport* set it up, or ``None``."""
        answer = transport.response.headers.get("Sec-WebSocket-Extensions", "")
        return Deflate(answer) if answer.startswith("permessage-deflate") else None

    def compress(self, data: bytes) -> bytes:
        if self.reset:
            self._compressor = zlib.compressobj(wbits=-15)
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4] if out.endswith(_DEFLATE_TAIL) else out

    def decompress(self, data: bytes) -> bytes:
        return self._decompressor.decompress(data + _DEFLATE_TAIL)


# ---------------------------------------------------------------------- clients

TEXT, BINARY, CONT, CLOSE, PONG = (
    WSMsgType.TEXT,
    WSMsgType.BINARY,
    WSMsgType.CONTINUATION,
    WSMsgType.CLOSE,
    WSMsgType.PONG,
)


class Client(WSListener):
    """A connection's listener: messages reassembled and handed to :meth:`on_message`; the
    server's close answered, recorded in :attr:`closed_by` and reported to :meth:`on_gone`,
    as is a connection lost without one."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: Any = None
        self.closed_by: str | None = None  # "CODE reason" of the server's close
        self.closing = False  # we are closing it: a disconnection is expected
        self.deflate: Deflate | None = None  # set by Connections when negotiated
        self._fragments: bytearray | None = None
        self._compressed = False  # the message being reassembled is

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def send_text(self, message: bytes) -> None:
        """Send *message* as a text message (compressed if permessage-deflate is on)."""
        if self.deflate is None:
            self.transport.send(TEXT, message)
        else:
            self.transport.send(TEXT, self.deflate.compress(message), rsv1=True)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind in (TEXT, BINARY):
            if frame.fin and not frame.rsv1:
                self.on_message(frame.get_payload_as_bytes())
            elif frame.fin:
                assert self.deflate is not None, "a compressed frame without permessage-deflate"
                self.on_message(self.deflate.decompress(frame.get_payload_as_bytes()))
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._compressed = bool(frame.rsv1)
        elif kind == CONT and self._fragments is not None:
            self._fragments += frame.get_payload_as_memoryview()
            if frame.fin:
                message, self._fragments = bytes(self._fragments), None
                if self._compressed:
                    assert self.deflate is not None
                    message = self.deflate.decompress(message)
                self.on_message(message)
        elif kind == CLOSE:
            # picows leaves the close handshake to us.
            payload = frame.get_payload_as_bytes()
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not transport.is_close_frame_sent:  # the server's initiative: answer it
                self.closed_by = f"{code} {payload[2:].decode(errors='replace')}".rstrip()
                # (send_close() without a code would send code 0, which is not valid)
                reply = WSCloseCode.OK if code == 1005 else WSCloseCode(code)
                transport.send_close(reply, payload[2:])
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        if self.closed_by is None and not self.closing:
            handshake = transport.close_handshake
            if handshake is not None and handshake.sent is not None:
                sent = handshake.sent
                self.closed_by = f"picows closed it: {int(sent.code)} {sent.reason}"
            else:
                self.closed_by = "connection lost without a close frame"
        self.on_gone()

    # asyncio's flow control, forwarded by picows (which warns of every call a listener does
    # not define): a client that writes a lot overrides these.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def on_message(self, payload: bytes) -> None:
        pass

    def on_gone(self) -> None:
        pass

    def close(self) -> None:
        """Start our closing handshake (or drop a connection already closing)."""
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if transport.is_close_frame_sent:
            transport.disconnect()
        else:
            transport.send_close(WSCloseCode.OK)


L = TypeVar("L", bound=Client)
T = TypeVar("T")


async def connect(
    port: int,
    path: str,
    factory: Callable[[], L],
    deadline: float,
    headers: Sequence[tuple[str, str]] = (),
) -> L | str:
    """Connect a client made by *factory* (sending the extra *headers*), retrying until
    *deadline* (``loop.time()``); returns the listener (its ``transport`` set), or the last
    reason it could not."""
    loop = asyncio.get_running_loop()
    url = f"ws://{HOST}:{port}{path}"
    reason = "no attempt"
    while loop.time() < deadline:
        try:
            # picows's own handshake timeout closes the socket; ours bounds the TCP connect.
            async with asyncio.timeout(HANDSHAKE_TIMEOUT + 1):
                transport, listener = await picows.ws_connect(
                    factory,
                    url,
                    websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                    max_frame_size=MAX_FRAME,
                    extra_headers=headers or None,
                )
        except (OSError, picows.WSError, TimeoutError) as exc:
            reason = f"connect: {exc!r}"
        else:
            if not transport.is_disconnected:
                return cast(L, listener)
            reason = "handshake: the server closed the connection"
        await asyncio.sleep(RETRY_DELAY)
    return reason


class Connections:
    """Connects clients, at most *concurrency* handshakes at a time; counts them. With
    *deflate*, each client offers permessage-deflate, and one whose server declines fails."""

    def __init__(
        self, port: int, path: str, concurrency: int, deadline: float, deflate: bool = False
    ) -> None:
        self.port, self.path, self.deadline = port, path, deadline
        self.headers = [DEFLATE_OFFER] if deflate else []
        self.handshakes = asyncio.Semaphore(concurrency)
        self.connected = 0
        self.failures: list[str] = []

    async def one(self, factory: Callable[[], L]) -> L | None:
        async with self.handshakes:
            result = await connect(self.port, self.path, factory, self.deadline, self.headers)
        if isinstance(result, str):
            self.failures.append(result)
            return None
        if self.headers:
            result.deflate = Deflate.negotiated(result.transport)
            if result.deflate is None:
                self.failures.append("the server declined permessage-deflate")
                result.transport.disconnect(graceful=False)
                return None
        self.connected += 1
        return result

    async def all(self, factories: Sequence[Callable[[], L]]) -> list[L]:
        results = await asyncio.gather(*(self.one(factory) for factory in factories))
        return [client for client in results if client is not None]


async def close_all(clients: Sequence[Any]) -> None:
    """Close *clients* (a closing handshake each, then a drop after :data:`CLOSE_TIMEOUT`)."""
    for client in clients:
        client.close()
    transports = [c.transport for c in clients if not c.transport.is_disconnected]
    if transports:
        waits = [asyncio.ensure_future(t.wait_disconnected()) for t in transports]
        done, pending = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # a listener's own error, already counted: not to be logged
        for transport in transports:
            transport.disconnect(graceful=False)


async def report(line: Callable[[], str]) -> None:
    """Every second, *line()* as the progress line on stderr (until cancelled)."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(1)
            progress(line())


def closes(clients: Sequence[Any]) -> list[str]:
    """The first few distinct reasons the server gave for closing *clients*."""
    reasons = dict.fromkeys(c.closed_by for c in clients if c.closed_by is not None)
    return list(reasons)[:3]


# ---------------------------------------------------------------------- pingpong


def _echo(text: bytes, sequence: int) -> tuple[bytes, bytes]:
    return text, text


def _typed(text: bytes, sequence: int) -> tuple[bytes, bytes]:
    return b'{"type":"ping","text":"%s"}' % text, b'{"type":"pong","text":"%s"}' % text


def _call(text: bytes, sequence: int) -> tuple[bytes, bytes]:
    return (
        b'{"type":"echo","ref":%d,"text":"%s"}' % (sequence, text),
        b'{"type":"reply","ref":%d,"data":{"text":"%s"}}' % (sequence, text),
    )


#: ``--format``: a message's text and its sequence number -> (what is sent, the exact answer).
FORMATS: dict[str, Callable[[bytes, int], tuple[bytes, bytes]]] = {
    "echo": _echo,
    "typed": _typed,
    "call": _call,
}


class PingPong:
    """The shared state of the ping-pong clients (callbacks of one event loop)."""

    def __init__(
        self, clients: int, firehose: int, late: bool = False, shape: str = "echo"
    ) -> None:
        self.clients = clients
        self.shape = FORMATS[shape]
        self.firehose = firehose
        self.start = self.end = float("inf")  # perf_counter() bounds of the timed window
        #: Round trips of the messages sent in the window and answered in it (or later too,
        #: with *late*: then a stall past the window's end is not left out of the figures).
        self.samples = array("d")
        self.late = late
        self.in_window = 0  # round trips both sent and answered in the window
        self.round_trips = 0  # all of them, warm-up included (for the progress line)
        self.sent = 0  # messages sent, warm-up included
        self.mismatches = 0
        self.closed_early = 0
        self.unfinished = clients
        self.finished = asyncio.Event()

    def client_done(self) -> None:
        self.unfinished -= 1
        if self.unfinished == 0:
            self.finished.set()


class PingPongClient(Client):
    """A ping-pong client: :meth:`begin` sends the first K messages; each echo sends the next,
    until the timed window is over."""

    def __init__(self, run: PingPong, index: int) -> None:
        super().__init__()
        self.run = run
        self.prefix = b"client %d message " % index
        self.sequence = 0
        self.in_flight: deque[tuple[bytes, float]] = deque()
        self.done = False

    def send_next(self) -> None:
        message, answer = self.run.shape(self.prefix + b"%d" % self.sequence, self.sequence)
        self.sequence += 1
        self.in_flight.append((answer, time.perf_counter()))
        self.run.sent += 1
        self.send_text(message)

    def begin(self) -> None:
        for _ in range(self.run.firehose):
            self.send_next()

    def on_message(self, payload: bytes) -> None:
        received = time.perf_counter()
        run = self.run
        if not self.in_flight:
            run.mismatches += 1  # an echo of nothing we sent
            return
        message, sent = self.in_flight.popleft()
        run.round_trips += 1
        if payload != message:
            run.mismatches += 1
        if sent >= run.start:
            if received <= run.end:
                run.in_window += 1
                run.samples.append(received - sent)
            elif run.late:
                run.samples.append(received - sent)
        if received < run.end:
            self.send_next()
        elif not self.in_flight and not self.done:
            self.done = True
            run.client_done()

    def on_gone(self) -> None:
        if not self.done and not self.closing:
            self.done = True
            self.run.closed_early += 1
            self.run.client_done()


async def pingpong(args: argparse.Namespace) -> tuple[array[float], dict[str, object]]:
    """Run the ping-pong; return the round-trip times of the timed window and a summary."""
    run = PingPong(args.clients, args.firehose, args.late, args.format)
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    deadline = loop.time() + CONNECT_DEADLINE
    connections = Connections(args.port, args.path, 100, deadline, args.deflate)
    clients: list[Any] = []
    timed_out = False
    reporter = None
    seen = done = 0

    def line() -> str:
        nonlocal seen, done
        now, count = clock(), len(run.samples)
        recent = sorted(run.samples[seen:count])
        rate, done = run.round_trips - done, run.round_trips  # in about the last second
        p50 = recent[len(recent) // 2] * 1e3 if recent else float("nan")
        phase = "warm-up" if now < run.start else "timed"
        total, elapsed = args.warmup + args.duration, now - run.start + args.warmup
        seen = count
        return (
            f"{args.label}: {min(elapsed, total):4.1f}/{total:g} s ({phase:7s}) "
            f"{rate:8,d} round trips/s  p50 {p50:6.2f} ms"
        )

    try:
        limit = CONNECT_DEADLINE + args.warmup + args.duration + args.straggler + 10
        async with asyncio.timeout(limit):
            factories = [partial(PingPongClient, run, i) for i in range(args.clients)]
            clients = await connections.all(factories)
            if len(clients) == args.clients:
                print(f"connected {len(clients)}", flush=True)
                run.start = clock() + args.warmup
                run.end = run.start + args.duration
                for client in clients:
                    client.begin()
                reporter = asyncio.ensure_future(report(line))
                # The driver reads these two lines to sample the processes' CPU times.
                await asyncio.sleep(run.start - clock())
                print("start", flush=True)
                await asyncio.sleep(run.end - clock())
                print("end", flush=True)
                # Every client stops after its last echo past the end; one still waiting
                # --straggler seconds later is stuck (the server lost a message).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.finished.wait(), args.straggler)
    except TimeoutError:
        timed_out = True
    finally:
        if reporter is not None:
            reporter.cancel()
        stuck = sum(not c.done for c in clients) if run.start < float("inf") else 0
        await close_all(clients)
        clear_progress()
    return run.samples, {
        "clients": args.clients,
        "connected": connections.connected,
        "connect_failures": connections.failures[:3],
        "duration": args.duration,
        "round_trips": run.in_window,
        "late": args.late,
        "sent": run.sent,
        "received": run.round_trips,
        "lost": sum(len(c.in_flight) for c in clients),
        "deflate": args.deflate,
        "mismatches": run.mismatches,
        "closed_early": run.closed_early,
        "timed_out": timed_out,
        "path": args.path,
        "firehose": args.firehose,
        "format": args.format,
        "stuck": stuck,
        "closes": closes(clients),
    }


# ---------------------------------------------------------------------- fanout


class Fanout:
    """The shared state of the receivers."""

    def __init__(self) -> None:
        self.counting = False  # between the "start" and "end" lines
        self.latencies = array("d")  # seconds
        self.bad = 0  # messages without "<time_ns> <seq>" in front


class Receiver(Client):
    """A fan-out receiver: counts the messages of the timed window, their latencies and the
    gaps in their sequence numbers."""

    def __init__(self, run: Fanout) -> None:
        super().__init__()
        self.run = run
        self.count = self.losses = self.reordered = 0
        self.last = -1  # the highest sequence number seen, in the window or before

    def on_message(self, payload: bytes) -> None:
        now = time.time_ns()
        run = self.run
        try:
            stamp, sequence = map(int, payload.split(b" ", 2)[:2])
        except ValueError:
            run.bad += run.counting
            return
        if run.counting:
            self.count += 1
            run.latencies.append((now - stamp) / 1e9)
            if self.last >= 0 and sequence > self.last + 1:
                self.losses += sequence - self.last - 1
            elif sequence <= self.last:
                self.reordered += 1
        self.last = max(self.last, sequence)


async def fanout(args: argparse.Namespace) -> tuple[array[float], dict[str, object]]:
    """Connect the receivers, count the timed window; return its latencies and a summary."""
    run = Fanout()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_DEADLINE
    connections = Connections(args.port, args.path, args.concurrency, deadline)
    clients: list[Any] = []
    timed_out = False
    reporter = None
    last = 0

    def line() -> str:
        nonlocal last
        total = sum(c.count for c in clients)
        rate, last = total - last, total
        phase = "timed" if run.counting else "waiting"
        return f"{args.label}: {phase:7s} {rate:10,d} deliveries/s  {total:12,d} in all"

    try:
        async with asyncio.timeout(CONNECT_DEADLINE + args.warmup + args.duration + 10):
            factories = [partial(Receiver, run)] * args.clients
            clients = await connections.all(factories)
            if len(clients) == args.clients:
                print(f"ready {len(clients)}", flush=True)
                reporter = asyncio.ensure_future(report(line))
                await asyncio.sleep(args.warmup)
                run.counting = True
                print("start", flush=True)
                await asyncio.sleep(args.duration)
                run.counting = False
                print("end", flush=True)
            else:
                print(f"failed {len(clients)} {json.dumps(connections.failures[:3])}", flush=True)
    except TimeoutError:
        timed_out = True
    finally:
        if reporter is not None:
            reporter.cancel()
        await close_all(clients)
        clear_progress()
    ordered = sorted(run.latencies)
    deliveries = sum(c.count for c in clients)
    p50, p99 = percentile(ordered, 0.50), percentile(ordered, 0.99)
    return run.latencies, {
        "clients": args.clients,
        "connected": connections.connected,
        "connect_failures": connections.failures[:3],
        "duration": args.duration,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / args.duration,
        "per_receiver": [c.count for c in clients],
        "losses": sum(c.losses for c in clients),
        "losses_per_receiver": [c.losses for c in clients],
        "reordered": sum(c.reordered for c in clients),
        "bad": run.bad,
        "p50_ms": None if math.isnan(p50) else p50 * 1e3,
        "p99_ms": None if math.isnan(p99) else p99 * 1e3,
        "closed_early": sum(c.closed_by is not None for c in clients),
        "closes": closes(clients),
        "timed_out": timed_out,
    }


# ---------------------------------------------------------------------- flood


class Flooder(Client):
    """The flood client: follows the transport's flow control; counts what it receives and
    discards it unread."""

    def __init__(self) -> None:
        super().__init__()
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = asyncio.Event()
        self.received = self.pauses = 0
        self.paused_at = 0.0
        self.paused_seconds = 0.0

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == CLOSE:
            super().on_ws_frame(transport, frame)
        elif frame.fin and frame.msg_type != PONG:
            self.received += 1

    def pause_writing(self) -> None:  # the send buffer went over the high-water mark
        self.pauses += 1
        self.paused_at = time.perf_counter()
        self.writable.clear()

    def resume_writing(self) -> None:
        self.paused_seconds += time.perf_counter() - self.paused_at
        self.writable.set()

    def paused_until(self, now: float) -> float:
        """Seconds paused so far, a pause still going on counted until *now*."""
        ongoing = 0.0 if self.writable.is_set() else now - self.paused_at
        return self.paused_seconds + ongoing

    def on_gone(self) -> None:
        if not self.writable.is_set():
            self.resume_writing()
        self.gone.set()


async def flood(args: argparse.Namespace) -> dict[str, object]:
    """Send ``--size``-byte messages as fast as the server reads them; return a summary."""
    loop = asyncio.get_running_loop()
    connections = Connections(args.port, args.path, 1, loop.time() + CONNECT_DEADLINE)
    clients = await connections.all([Flooder])
    if not clients:
        return {"size": args.size, "sent": 0, "ended": "connect failed",
                "connect_failures": connections.failures[:3]}  # fmt: skip
    client = clients[0]
    payload = b"x" * args.size
    sent = 0
    began = time.perf_counter()
    reporter = asyncio.ensure_future(
        report(lambda: f"flood: {sent:,d} messages sent, {client.received:,d} received")
    )
    print("start", flush=True)
    try:
        async with asyncio.timeout(args.duration):
            while not client.gone.is_set():
                if not client.writable.is_set():
                    await client.writable.wait()  # the send buffer is over the high-water mark
                    continue
                client.transport.send(TEXT, payload)
                sent += 1
                await asyncio.sleep(0)  # let the replies in
    except TimeoutError:
        pass
    ended = time.perf_counter()
    seconds, paused, stalled = (
        ended - began,
        client.paused_until(ended),
        not client.writable.is_set(),
    )
    print("end", flush=True)
    reporter.cancel()
    closed_by = client.closed_by
    await close_all([client])
    clear_progress()
    code, _, reason = (closed_by or "").partition(" ")
    return {
        "size": args.size,
        "seconds": seconds,
        "sent": sent,
        "sent_per_s": sent / seconds,
        "sent_bytes": sent * args.size,
        "received": client.received,
        "pauses": client.pauses,
        "paused_seconds": paused,
        "paused_at_end": stalled and not client.gone.is_set(),
        "ended": "duration" if closed_by is None else "closed by the server",
        "close_code": int(code) if code.isdigit() else None,
        "close_reason": reason if code.isdigit() else closed_by,
    }


# ---------------------------------------------------------------------- idle


def stdin_closed() -> asyncio.Future[None]:
    """A future done once stdin reaches its end (read in a daemon thread, which never keeps
    the process alive)."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not closed.done():
            closed.set_result(None)

    def read() -> None:
        try:  # os.read, not sys.stdin's buffer: its lock would stall the interpreter's exit
            while os.read(0, 65536):
                pass
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(done)

    threading.Thread(target=read, daemon=True).start()
    return closed


async def idle(args: argparse.Namespace) -> None:
    count = args.connections
    raise_nofile(count + 256)
    loop = asyncio.get_running_loop()
    connections = Connections(args.port, args.path, args.concurrency, loop.time() + args.deadline)
    reporter = asyncio.ensure_future(
        report(lambda: f"idle connections: {connections.connected:,}/{count:,}")
    )
    clients = await connections.all([Client] * count)
    reporter.cancel()
    clear_progress()
    try:
        if len(clients) == count:
            print(f"ready {count}", flush=True)
            with contextlib.suppress(TimeoutError):  # until the driver closes our stdin
                await asyncio.wait_for(stdin_closed(), args.hold)
        else:
            print(f"failed {len(clients)} {json.dumps(connections.failures[:3])}", flush=True)
    finally:
        dropped = closes(clients)
        if dropped:
            note(f"  the server closed idle connections: {dropped}")
        await close_all(clients)


# ---------------------------------------------------------------------- main


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run *main* on uvloop if it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    ping = modes.add_parser("pingpong")
    ping.add_argument("port", type=int)
    ping.add_argument("--clients", type=int, default=50)
    ping.add_argument("--warmup", type=float, default=2.0)
    ping.add_argument("--duration", type=float, default=10.0)
    ping.add_argument("--out", required=True)
    ping.add_argument("--label", default="ping-pong")
    ping.add_argument("--path", default=PATH)
    ping.add_argument("--firehose", type=int, default=1, help="messages in flight per client")
    ping.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    ping.add_argument("--format", choices=list(FORMATS), default="echo", help="what is sent")
    ping.add_argument(
        "--late", action="store_true",
        help="--out also has the round trips of messages sent in the window, answered after it",
    )  # fmt: skip
    ping.add_argument(
        "--straggler", type=float, default=STRAGGLER_TIMEOUT,
        help="seconds after the window for the last echoes",
    )  # fmt: skip
    fan = modes.add_parser("fanout")
    fan.add_argument("port", type=int)
    fan.add_argument("--clients", type=int, default=100)
    fan.add_argument("--warmup", type=float, default=0.0, help="seconds after 'ready'")
    fan.add_argument("--duration", type=float, default=10.0)
    fan.add_argument("--out", help="latencies, float64 seconds")
    fan.add_argument("--label", default="fanout")
    fan.add_argument("--path", default=PATH)
    fan.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    blast = modes.add_parser("flood")
    blast.add_argument("port", type=int)
    blast.add_argument("--size", type=int, default=2**20, help="bytes per message")
    blast.add_argument("--duration", type=float, default=10.0)
    blast.add_argument("--path", default=PATH)
    hold = modes.add_parser("idle")
    hold.add_argument("port", type=int)
    hold.add_argument("--connections", type=int, default=5000)
    hold.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    hold.add_argument("--deadline", type=float, default=120.0, help="seconds to open them all")
    hold.add_argument("--hold", type=float, default=300.0, help="at most, once open")
    hold.add_argument("--path", default=PATH)
    args = parser.parse_args()
    if getattr(args, "firehose", 1) < 1 or getattr(args, "clients", 1) < 1:
        parser.error("--clients and --firehose must be at least 1")
    raise_nofile(1024)
    if args.mode in ("pingpong", "fanout"):
        samples, summary = run({"pingpong": pingpong, "fanout": fanout}[args.mode](args))
        if args.out:
            with open(args.out, "wb") as out:
                samples.tofile(out)
        print(json.dumps(summary), flush=True)
    elif args.mode == "flood":
        print(json.dumps(run(flood(args))), flush=True)
    else:
        run(idle(args))


if __name__ == "__main__":
    main()
