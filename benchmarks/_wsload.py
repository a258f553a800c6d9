"""The WebSocket side of the broker benchmark, each run in its own process:

    python benchmarks/_wsload.py pingpong PORT --clients N --warmup S --duration S --out FILE
    python benchmarks/_wsload.py idle PORT --connections N
    python benchmarks/_wsload.py echo

- ``pingpong``: N trio-websocket clients, each sending a message, waiting for its echo and
  sending the next, for ``--warmup`` then ``--duration`` seconds. The round-trip times of the
  timed window go to ``--out`` (float64 seconds, native byte order); a JSON summary goes to
  stdout, a progress line to stderr.
- ``idle``: open N WebSocket connections (a bounded number of handshakes at a time, a refused
  one retried until the deadline), print ``ready N`` on stdout, then hold them idle until stdin
  closes.
- ``echo``: a plain trio-websocket echo server on a free loopback port (printed on stdout):
  the ceiling of the WebSocket layer, with no broker and no backend.

Every WebSocket client owns its TCP stream (``wrap_client_stream``): ``open_websocket``
leaves the socket of a rejected handshake unclosed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
)

HOST = "127.0.0.1"
PATH = "/ws/bench"
CONNECT_DEADLINE = 20.0  # seconds for every client to be connected
HANDSHAKE_TIMEOUT = 10.0  # seconds for one attempt
CLOSE_TIMEOUT = 1.0


def raise_nofile(needed: int) -> None:
    """Raise this process's open-file limit to at least *needed* (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


Session = Callable[[WebSocketConnection], Awaitable[None]]


async def run_client(port: int, deadline: float, session: Session, failures: list[str]) -> None:
    """Connect (retrying until *deadline*, on trio's clock), run *session*, close.

    A client that never connects appends the last reason to *failures*."""
    reason = "no attempt"
    while trio.current_time() < deadline:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                stream = await trio.open_tcp_stream(HOST, port)
        except (OSError, trio.TooSlowError) as exc:
            reason = f"connect: {exc!r}"
            await trio.sleep(0.2)
            continue
        async with stream, trio.open_nursery() as nursery:  # trio-websocket's reader task
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    ws = await wrap_client_stream(nursery, stream, HOST, PATH)
            except (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError) as exc:
                reason = f"handshake: {exc!r}"
                nursery.cancel_scope.cancel()
            else:
                try:
                    await session(ws)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
                return
        await trio.sleep(0.2)
    failures.append(reason)


# ---------------------------------------------------------------------- pingpong


class PingPong:
    """The shared state of the ping-pong clients."""

    def __init__(self, clients: int, warmup: float, duration: float) -> None:
        self.clients = clients
        self.warmup = warmup
        self.duration = duration
        self.connected = 0
        self.all_connected = trio.Event()
        self.start = self.end = math.inf  # perf_counter() bounds of the timed window
        self.samples = array("d")
        self.round_trips = 0  # all of them, warm-up included (for the progress line)
        self.mismatches = 0
        self.closed_early = 0

    async def session(self, index: int, ws: WebSocketConnection) -> None:
        self.connected += 1
        if self.connected == self.clients:
            self.all_connected.set()
        await self.all_connected.wait()
        samples, clock = self.samples, time.perf_counter
        sequence = 0
        try:
            while True:
                message = f"client {index} message {sequence}"
                sent = clock()
                await ws.send_message(message)
                reply = await ws.get_message()
                received = clock()
                self.round_trips += 1
                if reply != message:
                    self.mismatches += 1
                if sent >= self.start and received <= self.end:
                    samples.append(received - sent)
                if received >= self.end:
                    return
                sequence += 1
        except ConnectionClosed:
            self.closed_early += 1


async def progress(state: PingPong, label: str) -> None:
    total = state.warmup + state.duration
    began = time.perf_counter()
    seen = done = 0
    while True:
        await trio.sleep(1)
        now = time.perf_counter()
        count = len(state.samples)
        recent = sorted(state.samples[seen:count])
        rate, done = state.round_trips - done, state.round_trips  # in about the last second
        p50 = recent[len(recent) // 2] * 1e3 if recent else float("nan")
        phase = "warm-up" if now < state.start else "timed"
        print(
            f"\r  {label}: {min(now - began, total):4.1f}/{total:g} s ({phase:7s}) "
            f"{rate:8,d} round trips/s  p50 {p50:6.2f} ms   ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        seen = count


async def pingpong(args: argparse.Namespace) -> tuple[array[float], dict[str, object]]:
    """Run the ping-pong; return the round-trip times of the timed window and a summary."""
    state = PingPong(args.clients, args.warmup, args.duration)
    failures: list[str] = []
    with trio.move_on_after(CONNECT_DEADLINE + args.warmup + args.duration + 10) as timer:
        async with trio.open_nursery() as nursery:
            deadline = trio.current_time() + CONNECT_DEADLINE
            for index in range(args.clients):
                session = partial(state.session, index)
                nursery.start_soon(run_client, args.port, deadline, session, failures)
            with trio.move_on_at(deadline):
                await state.all_connected.wait()
            if not state.all_connected.is_set():
                nursery.cancel_scope.cancel()
            else:
                state.start = time.perf_counter() + args.warmup
                state.end = state.start + args.duration
                nursery.start_soon(progress, state, args.label)
                # The driver reads these two lines to sample the processes' CPU times.
                await trio.sleep(args.warmup)
                print("start", flush=True)
                await trio.sleep(args.duration)
                print("end", flush=True)
                # Every client returns after its first reply past the end; one still waiting
                # a second later is stuck (the broker lost a message): stop it.
                await trio.sleep(1)
                nursery.cancel_scope.cancel()
    print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
    return state.samples, {
        "clients": args.clients,
        "connected": state.connected,
        "connect_failures": failures[:3],
        "duration": args.duration,
        "round_trips": len(state.samples),
        "mismatches": state.mismatches,
        "closed_early": state.closed_early,
        "timed_out": timer.cancelled_caught,
    }


# ---------------------------------------------------------------------- idle


async def idle(args: argparse.Namespace) -> None:
    count = args.connections
    raise_nofile(count + 256)
    opened = 0
    failures: list[str] = []
    handshakes = trio.Semaphore(args.concurrency)
    everyone = trio.Event()

    async def one(deadline: float) -> None:
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                handshakes.release()

        async def hold(ws: WebSocketConnection) -> None:
            nonlocal opened
            release()
            opened += 1
            if opened == count:
                everyone.set()
            await trio.sleep_forever()

        await handshakes.acquire()
        try:
            await run_client(args.port, deadline, hold, failures)
        finally:
            release()

    async def report() -> None:
        while True:
            print(f"\r  idle connections: {opened:,}/{count:,}   ", end="", file=sys.stderr)
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        deadline = trio.current_time() + args.deadline
        nursery.start_soon(report)
        for _ in range(count):
            nursery.start_soon(one, deadline)
        with trio.move_on_at(deadline):
            await everyone.wait()
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        if everyone.is_set():
            print(f"ready {opened}", flush=True)
            with trio.move_on_after(args.hold):  # until the driver closes our stdin
                await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        else:
            print(f"failed {opened} {json.dumps(failures[:3])}", flush=True)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- echo


async def echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def echo(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, echo_handler, HOST, 0, None))
        print(server.port, flush=True)


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
    hold = modes.add_parser("idle")
    hold.add_argument("port", type=int)
    hold.add_argument("--connections", type=int, default=5000)
    hold.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    hold.add_argument("--deadline", type=float, default=120.0, help="seconds to open them all")
    hold.add_argument("--hold", type=float, default=300.0, help="at most, once open")
    modes.add_parser("echo")
    args = parser.parse_args()
    raise_nofile(1024)
    if args.mode == "pingpong":
        samples, summary = trio.run(pingpong, args)
        with open(args.out, "wb") as out:
            samples.tofile(out)
        print(json.dumps(summary), flush=True)
    else:
        trio.run({"idle": idle, "echo": echo}[args.mode], args)


if __name__ == "__main__":
    main()
