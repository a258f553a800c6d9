"""The clients of the room fan-out benchmarks (``cluster.py``, ``fanout.py``), each run in its
own process:

    python benchmarks/_roomclients.py publisher PORT
    python benchmarks/_roomclients.py admit PORT
    python benchmarks/_roomclients.py load PORT CLIENTS OUT

- ``publisher``: a backend (``StrandsClient``) on the broker's backend PORT that admits every
  client into the room and, on ``run STEP RATE SECONDS`` on stdin, sends room messages at
  RATE per second for SECONDS (open loop), each carrying the ``time.perf_counter()`` of its
  sending (system-wide on Linux, so comparable across processes), then prints
  ``done STEP SENT``;
- ``admit``: a backend that only admits every client into the room (a node without the
  publisher);
- ``load``: CLIENTS WebSocket clients of the broker's WebSocket PORT, read by one blocking
  epoll loop that parses frames itself, recording each delivery's delay by step (see
  :func:`run_load` for its commands).
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import sys
import time
from array import array
from pathlib import Path

import trio
from _common import HOST, raise_nofile

from strands_trio import ConnectionRequestContext, StrandsClient

ROOM = "bench"


class Admit(StrandsClient):
    """A backend that admits every client into the room."""

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        request.context.room_id = ROOM
        return True


def run_publisher(port: int) -> None:
    """A backend that admits every client and, on ``run STEP RATE SECONDS`` on stdin, sends
    room messages at RATE per second for SECONDS, then prints ``done STEP SENT``."""

    async def main() -> None:
        client = Admit(HOST, port)
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
    trio.run(Admit(HOST, port).run)


def run_load(port: int, clients: int, out: Path) -> None:
    """*clients* WebSocket clients of loopback *port*, read by one blocking epoll loop that
    parses frames itself (no framework: this load generator must cost less CPU per delivery
    than the brokers it measures). Prints ``ready N`` once all are connected; records each
    message's delay by step; on ``report STEP`` on stdin, writes ``out.STEP`` (float64
    seconds) and prints ``ok STEP {json}``; on ``quiet``, prints ``quiet`` once no message
    has come for 0.25 s (the backlog of an overloaded step has drained); ends with stdin."""
    raise_nofile(clients + 100)
    socks: dict[int, socket.socket] = {}
    buffers: dict[int, bytes] = {}
    for _ in range(clients):
        sock = socket.create_connection((HOST, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws/{ROOM} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
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


def main() -> None:
    usage = f"usage: python {sys.argv[0]} publisher PORT | admit PORT | load PORT CLIENTS OUT"
    if len(sys.argv) < 3:
        sys.exit(usage)
    mode, port, *rest = sys.argv[1:]
    if mode == "publisher" and not rest:
        run_publisher(int(port))
    elif mode == "admit" and not rest:
        run_admit(int(port))
    elif mode == "load" and len(rest) == 2:
        run_load(int(port), int(rest[0]), Path(rest[1]))
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main()
