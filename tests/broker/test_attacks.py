"""The broker under hostile or heavy clients, end to end on loopback: malformed handshakes,
non-ASCII headers, a slowloris, protocol violations and their close codes, floods and
fire-hoses, fan-out, compression, and the reference's lenient ``accepted``.

Every WebSocket client here is independent of the broker's code: websockets' sans-IO client
over a Trio stream (``tests/_wsclient.py``), or raw bytes over TCP for malformed input.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing

from strands_trio import ClientConfig, ConnectionRequestContext, Context, StrandsClient
from strands_trio.broker import (
    Admission,
    BrokerAddress,
    BrokerConfig,
    Delivery,
    FrontStatistics,
    Hub,
    serve_broker,
)
from strands_trio.broker._connection import WebSocketConnection, text_frame

from .._net import Changes
from .._wsclient import WSClient, open_socket, raw_exchange, read_to_end

#: A bound on every test; what each test waits for takes a fraction of it.
DEADLINE = 10
BACKEND_CONFIG = ClientConfig(heartbeat_interval=None, reconnect_jitter=0)


def broker_config(**settings: Any) -> BrokerConfig:
    """A loopback broker on free ports, without heartbeats, quick to shut down."""
    settings.setdefault("shutdown_timeout", 2.0)
    return BrokerConfig(
        ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None, **settings
    )


class Echo(StrandsClient):
    """A backend that admits everyone (``X-Id`` and ``X-Room`` headers place the client),
    records requests and departures, and answers messages:

    - ``kick`` closes the sender with 4001 "kicked";
    - ``room <room> <text>`` sends *text* to *room*;
    - ``pump <room> <count> <size>`` sends up to *count* messages of *size* bytes to *room*,
      stopping early once a client of that room has left;
    - anything else comes back to the sender, after ``delay`` seconds.
    """

    def __init__(self, port: int, *, delay: float = 0.0, config: ClientConfig = BACKEND_CONFIG):
        super().__init__("127.0.0.1", port, config=config)
        self.delay = delay
        self.requests: list[ConnectionRequestContext] = []
        self.left: list[Context] = []
        self._changes = Changes()
        self.wait_for = self._changes.wait_for

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        self.requests.append(request)
        self._changes.pulse()
        request.context.client_id = request.header("x-id") or request.context.client_id
        request.context.room_id = request.header("x-room") or request.context.room_id
        return True

    async def on_message(self, message: str, context: Context) -> None:
        command, _, rest = message.partition(" ")
        if command == "kick":
            await self.close_connection(context.client_id, 4001, "kicked")
        elif command == "room":
            room, text = rest.split(" ", 1)
            await self.send_room_message(room, text)
        elif command == "pump":
            room, count, size = rest.split()
            for _ in range(int(count)):
                if any(gone.room_id == room for gone in self.left):
                    break
                await self.send_room_message(room, "x" * int(size))
                await trio.lowlevel.checkpoint()
        else:
            if self.delay:
                await trio.sleep(self.delay)
            await self.send_private_message(context.client_id, message)

    async def on_disconnect(self, context: Context) -> None:
        self.left.append(context)
        self._changes.pulse()


async def start(
    nursery: trio.Nursery, *, delay: float = 0.0, **settings: Any
) -> tuple[BrokerAddress, Echo]:
    """A broker on loopback with *settings*, and an :class:`Echo` backend connected to it."""
    address: BrokerAddress = await nursery.start(serve_broker, broker_config(**settings))
    backend = Echo(address.tcp_port, delay=delay)
    await nursery.start(backend.run)
    await address.hub.wait_backends(1)
    return address, backend


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition on the broker's figures, which announce no change: let every task
    run until all are blocked, check, and again while bytes are still on their way (the
    caller's deadline bounds it)."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(0.005)


async def connect(
    address: BrokerAddress, client_id: str, room: str = "lobby", **kw: Any
) -> WSClient:
    """A WebSocket client placed by the Echo backend as *client_id* in *room*."""
    headers = [("X-Id", client_id), ("X-Room", room)]
    return await WSClient.connect(address.ws_port, f"/ws/{room}", headers, **kw)


# ---------------------------------------------------------------------- 1. malformed handshakes

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD_HEADERS = (
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
)


def handshake(
    *,
    drop: tuple[str, ...] = (),
    add: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    request_line: str = "GET /ws/chat HTTP/1.1",
) -> bytes:
    """A raw handshake request: the good headers, less *drop*, with *replace*d values, then
    *add*."""
    lines = [request_line]
    for line in GOOD_HEADERS:
        name = line.split(":")[0]
        if name in drop:
            continue
        lines.append(f"{name}: {replace[name]}" if replace and name in replace else line)
    lines.extend(add)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


MALFORMED = {
    "duplicate Upgrade": (handshake(add=("Upgrade: websocket",)), 426),
    "Upgrade: h2c, websocket": (handshake(replace={"Upgrade": "h2c, websocket"}), 426),
    "no Connection: Upgrade": (handshake(drop=("Connection",)), 426),
    "Connection: keep-alive only": (handshake(replace={"Connection": "keep-alive"}), 426),
    "duplicate Sec-WebSocket-Version": (handshake(add=("Sec-WebSocket-Version: 13",)), 400),
    "key not base64": (handshake(replace={"Sec-WebSocket-Key": "not base64 at all!"}), 400),
    "key of 15 bytes": (handshake(replace={"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"}), 400),
    "duplicate key": (handshake(add=(f"Sec-WebSocket-Key: {KEY}",)), 400),
    "missing key": (handshake(drop=("Sec-WebSocket-Key",)), 400),
    "HTTP/1.0": (handshake(request_line="GET /ws/chat HTTP/1.0"), 505),
    "POST": (handshake(request_line="POST /ws/chat HTTP/1.1"), 405),
    "version 8": (handshake(replace={"Sec-WebSocket-Version": "8"}), 426),
    "two Host headers": (handshake(add=("Host: other",)), 400),
    "no Host": (handshake(drop=("Host",)), 400),
    "garbage": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03GARBAGE\xff\r\n\r\n", 400),
    "garbage header line": (handshake(add=("this is not a header",)), 400),
    "header line over 8 KiB": (handshake(add=("X-Long: " + "a" * 9000,)), 431),
    "head over 16 KiB": (handshake(add=tuple(f"X-H{n}: {'b' * 2000}" for n in range(10))), 431),
    "too many headers": (handshake(add=tuple(f"X-N{n}: 1" for n in range(200))), 431),
}


@pytest.mark.parametrize(("request_bytes", "status"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_handshake_is_refused_before_any_backend_hears(
    nursery: trio.Nursery, request_bytes: bytes, status: int
) -> None:
    """A malformed handshake gets its HTTP error status and never reaches a backend as a
    connection_request."""
    address, backend = await start(nursery)
    with trio.fail_after(DEADLINE):
        got, headers, _ = await raw_exchange(address.ws_port, request_bytes)
    assert got == status
    if status == 405:
        assert headers["allow"] == ["GET"]
    if request_bytes == MALFORMED["version 8"][0]:
        assert headers["sec-websocket-version"] == ["13"]
    assert address.statistics().hub.requests == 0
    assert backend.requests == []


async def test_every_malformed_handshake_is_counted(nursery: trio.Nursery) -> None:
    """Every malformed handshake of the table is counted as a bad_request refusal, in the
    statistics and in /metrics."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        for request_bytes, _ in MALFORMED.values():
            await raw_exchange(address.ws_port, request_bytes)
        _, _, body = await raw_exchange(
            address.ws_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert address.statistics().front.refused["bad_request"] == len(MALFORMED)
    line = f'strands_broker_ws_handshakes_refused_total{{reason="bad_request"}} {len(MALFORMED)}\n'
    assert line in body.decode()


# ---------------------------------------------------------------------- 2. non-ASCII headers


async def test_non_ascii_host_on_plain_http_gets_an_answer_without_traceback(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """GET /healthz with a Host header of non-ASCII (and invalid UTF-8) bytes is answered 200
    and logs no error."""
    address, _ = await start(nursery)
    request = b"GET /healthz HTTP/1.1\r\nHost: h\xc3\xa9\xff:1\r\n\r\n"
    with caplog.at_level(logging.INFO), trio.fail_after(DEADLINE):
        status, _, body = await raw_exchange(address.ws_port, request)
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_non_ascii_header_bytes_reach_the_backend_as_utf8_with_replacement(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A handshake's non-ASCII header bytes reach the backend decoded as UTF-8 with U+FFFD
    for invalid sequences; its Host (exactly one, any bytes) is accepted and never passed on."""
    address, backend = await start(nursery)
    request = handshake(
        replace={"Host": "h\xc3\xa9\xff:1"}, add=("X-Name: h\xc3\xa9\xff", "X-Id: name")
    )
    request = request.decode().encode("latin-1")  # the raw bytes, not their UTF-8
    assert b"X-Name: h\xc3\xa9\xff\r\n" in request
    with caplog.at_level(logging.INFO), trio.fail_after(DEADLINE):
        stream = await open_socket(address.ws_port)
        async with stream:
            await stream.send_all(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some()
                assert chunk, f"closed after {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101 ")
            await backend.wait_for(lambda: len(backend.requests) == 1)
    (seen,) = backend.requests
    assert seen.headers["X-Name"] == ["h\u00e9\ufffd"]
    assert "Host" not in seen.headers
    assert all(name.lower() != "host" for name in seen.headers)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------------- 3. slowloris

SLOW_HEAD = b"GET /ws/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


async def drip(stream: trio.SocketStream) -> None:
    """A slowloris: one byte of a request head every 0.2 s, never finishing in time."""
    for byte in SLOW_HEAD:
        await stream.send_all(bytes([byte]))
        await trio.sleep(0.2)
    await trio.sleep_forever()


async def refused_at_once(port: int) -> int | None:
    """Open a socket, start a request head, and read the answer: 429, or ``None`` when the
    socket was closed without one."""
    stream = await open_socket(port)
    async with stream:
        try:
            await stream.send_all(b"G")
        except trio.BrokenResourceError:
            return None
        answer = await read_to_end(stream)
    return int(answer.split()[1]) if answer else None


async def test_slowloris_is_held_to_its_addresss_share(nursery: trio.Nursery) -> None:
    """Sockets from one address hold at most max_connections_per_ip slots, taken at accept
    before any byte is read; more are refused at once (429, counted), while /healthz from
    another address answers and a real handshake from a third succeeds."""
    address, _ = await start(nursery, max_connections_per_ip=20, handshake_timeout=30.0)
    port = address.ws_port

    def front() -> FrontStatistics:
        return address.statistics().front

    with trio.fail_after(DEADLINE):
        async with AsyncExitStack() as stack, trio.open_nursery() as drips:
            held = [await stack.enter_async_context(await open_socket(port)) for _ in range(20)]
            await wait_until(lambda: front().slots.used == 20)
            # Not one byte sent yet, and the address's slots are all taken.
            assert front().slots.addresses == 1
            with trio.fail_after(1):
                assert await refused_at_once(port) in (429, None)
            for stream in held[10:]:
                drips.start_soon(drip, stream)
            with trio.fail_after(2):
                answers = [await refused_at_once(port) for _ in range(39)]
            assert set(answers) <= {429, None}
            assert answers.count(429) >= 1

            with trio.fail_after(1):
                status, _, body = await raw_exchange(
                    port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2"
                )
            assert status == 200
            assert json.loads(body)["status"] == "ok"

            with trio.fail_after(2):
                real = await connect(address, "real", source="127.0.0.3")
                await real.send("still here")
                assert await real.receive() == "still here"
                await real.close()

            status, _, body = await raw_exchange(
                port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2"
            )
            assert status == 200
            assert 'strands_broker_ws_handshakes_refused_total{reason="per_ip"} 40\n' in (
                body.decode()
            )
            # Once the other addresses' connections have closed, the slowloris still holds
            # its share, no more.
            await wait_until(lambda: front().slots.addresses == 1)
            assert front().slots.used == 20
            drips.cancel_scope.cancel()


# ---------------------------------------------------------------------- 4. close codes


async def expect_close(ws: WSClient, code: int, reason: str | None = None) -> None:
    """Read until *ws* ends; it must end with a close frame carrying *code* (and *reason*)."""
    closed, _ = await ws.wait_closed()
    assert closed.framed, "the connection ended without a close frame (1006)"
    assert closed.code == code
    if reason is not None:
        assert closed.reason == reason
    await ws.aclose()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(nursery: trio.Nursery) -> None:
    """A text message that is not UTF-8 closes the client with 1007 in a close frame."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "a")
        await ws.send_text_bytes(b"bad \xff\xfe utf-8")
        await expect_close(ws, 1007)


PROTOCOL_ERRORS = {
    "unmasked frame": b"\x81\x02hi",
    "reserved opcode 3": b"\x83\x80\x01\x02\x03\x04",
    "reserved bit set": b"\xc1\x82\x01\x02\x03\x04" + bytes([ord("h") ^ 1, ord("i") ^ 2]),
    "continuation without start": b"\x80\x80\x01\x02\x03\x04",
}


@pytest.mark.parametrize("frame", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
async def test_a_protocol_error_closes_with_1002(nursery: trio.Nursery, frame: bytes) -> None:
    """A frame that breaks RFC 6455 closes the client with 1002 in a close frame."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "a")
        await ws.send_raw(frame)
        await expect_close(ws, 1002)


async def test_a_message_over_max_message_size_closes_with_1009(nursery: trio.Nursery) -> None:
    """A message over max_message_size closes the client with 1009 in a close frame; one of
    exactly that size goes through."""
    address, _ = await start(nursery, max_message_size=4096)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "a")
        await ws.send("y" * 4096)
        assert await ws.receive() == "y" * 4096
        await ws.send("z" * 4097)
        await expect_close(ws, 1009)


async def test_broker_shutdown_closes_with_1001(nursery: trio.Nursery) -> None:
    """Cancelling serve_broker closes every client with 1001 in a close frame."""
    scope = trio.CancelScope()

    async def broker(*, task_status: trio.TaskStatus[BrokerAddress]) -> None:
        with scope:
            await serve_broker(broker_config(), task_status=task_status)

    address: BrokerAddress = await nursery.start(broker)
    backend = Echo(address.tcp_port)
    await nursery.start(backend.run)
    with trio.fail_after(DEADLINE):
        await address.hub.wait_backends(1)
        clients = [await connect(address, f"c{n}") for n in range(3)]
        scope.cancel()
        for ws in clients:
            await expect_close(ws, 1001)


async def test_close_connection_extension_closes_with_the_backends_code(
    nursery: trio.Nursery,
) -> None:
    """A backend's close_connection with 4001 "kicked" closes the client with 4001 "kicked"
    in a close frame, and the backend hears it left."""
    address, backend = await start(nursery)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "a")
        await ws.send("kick")
        await expect_close(ws, 4001, "kicked")
        await backend.wait_for(lambda: [c.client_id for c in backend.left] == ["a"])


async def test_a_client_that_does_not_read_is_closed_with_1008(nursery: trio.Nursery) -> None:
    """A client that reads nothing while room messages fill its queue is closed with 1008 in
    a close frame (after the messages already on their way); the room's sender is not."""
    address, backend = await start(nursery, client_queue_bytes=64 * 1024)
    with trio.fail_after(DEADLINE):
        victim = await connect(address, "victim", room="quiet", receive_buffer=4096)
        pusher = await connect(address, "pusher", room="loud")
        await pusher.send("pump quiet 4000 8192")  # at most 32 MiB; stops when victim goes
        await backend.wait_for(lambda: [c.client_id for c in backend.left] == ["victim"])
        closed, received = await victim.wait_closed()
        await victim.aclose()
        assert closed.framed, "the connection ended without a close frame (1006)"
        assert (closed.code, closed.reason) == (1008, "too slow: message queue full")
        assert received > 0
        assert address.statistics().front.slow_clients_closed == 1
        await pusher.send("ping")
        assert await pusher.receive() == "ping"
        await pusher.close()


async def test_a_second_client_with_the_same_id_closes_the_first_with_1008(
    nursery: trio.Nursery,
) -> None:
    """When a second client connects under the same client_id, the first is closed with
    1008 in a close frame and the second works."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        first = await connect(address, "same")
        second = await connect(address, "same")
        await expect_close(first, 1008)
        await second.send("hello")
        assert await second.receive() == "hello"
        await second.close()


# ---------------------------------------------------------------------- 5. flood without loss

MAX_MESSAGE = 16 * 1024


async def ping_pong(ws: WSClient, name: str, rounds: int) -> None:
    for n in range(rounds):
        await ws.send(f"{name}-{n}")
        assert await ws.receive() == f"{name}-{n}"


async def test_a_flood_slows_the_flooder_and_loses_nothing(nursery: trio.Nursery) -> None:
    """One client flooding max-size messages to a slow backend is paused by flow control,
    while ten others' ping-pongs all come back in order; nobody is closed and the backend is
    never dropped."""
    address, _ = await start(
        nursery, delay=0.005, max_message_size=MAX_MESSAGE, client_share=MAX_MESSAGE
    )
    flood = 100
    with trio.fail_after(DEADLINE):
        flooder = await connect(address, "flooder")
        others = [await connect(address, f"p{n}") for n in range(10)]

        async def send_flood() -> None:
            for n in range(flood):
                await flooder.send(f"{n:05d}".ljust(MAX_MESSAGE, "f"))

        async def read_flood() -> None:
            for n in range(flood):
                assert (await flooder.receive())[:5] == f"{n:05d}"

        async with trio.open_nursery() as clients:
            clients.start_soon(send_flood)
            clients.start_soon(read_flood)
            for n, ws in enumerate(others):
                clients.start_soon(ping_pong, ws, f"p{n}", 20)

        stats = address.statistics()
        assert stats.backends.stalled == 0
        assert stats.backends.events_lost == 0
        assert stats.hub.flow_pauses > 0
        assert stats.hub.connections == 11
        assert stats.front.slow_clients_closed == 0
        assert all(ws.closed is None for ws in [flooder, *others])
        for ws in [flooder, *others]:
            await ws.close()


# ---------------------------------------------------------------------- 6. fire-hose


async def test_fire_hose_clients_are_not_closed_and_lose_nothing(nursery: trio.Nursery) -> None:
    """Clients that keep 50 messages in flight while reading the replies are never closed
    with 1008, and every reply comes back in order."""
    address, _ = await start(nursery, client_queue_bytes=256 * 1024)
    count, window, size = 200, 50, 2048

    async def hose(ws: WSClient, name: str) -> None:
        slots = trio.Semaphore(window)

        async def send_all() -> None:
            for n in range(count):
                await slots.acquire()
                await ws.send(f"{name}:{n:05d}:".ljust(size, "h"))

        async with trio.open_nursery() as tasks:
            tasks.start_soon(send_all)
            for n in range(count):
                assert (await ws.receive()).startswith(f"{name}:{n:05d}:")
                slots.release()

    with trio.fail_after(DEADLINE):
        clients = [await connect(address, f"h{n}") for n in range(5)]
        async with trio.open_nursery() as tasks:
            for n, ws in enumerate(clients):
                tasks.start_soon(hose, ws, f"h{n}")
        front = address.statistics().front
        assert front.slow_clients_closed == 0
        assert front.messages_lost == {"too_slow": 0, "connection_lost": 0}
        for ws in clients:
            assert ws.closed is None
            await ws.close()


# ---------------------------------------------------------------------- 7. fan-out


async def test_a_room_message_reaches_every_member_once(nursery: trio.Nursery) -> None:
    """One message_to_room to a room of 20 clients reaches each member exactly once."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        members = [await connect(address, f"m{n}", room="fan") for n in range(20)]
        await members[0].send("room fan hello all")
        for n, ws in enumerate(members):
            assert await ws.receive() == "hello all"
            await ws.send(f"after-{n}")  # a duplicate would arrive before this echo
            assert await ws.receive() == f"after-{n}"
        for ws in members:
            await ws.close()


class RecordingLink:
    """A client link that records what the hub hands it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.flushes = 0

    def deliver(self, message: Delivery) -> bool:
        self.deliveries.append(message)
        return True

    def flush(self) -> None:
        self.flushes += 1

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("not expected")


def admission(client_id: str, room: str) -> Admission:
    return Admission(accepted=True, client_id=client_id, room_id=room)


async def test_hub_hands_one_delivery_object_to_every_member() -> None:
    """Hub.deliver_to_room hands the same Delivery object to every member of the room (and
    nothing to others), and flushes each member once."""
    hub = Hub(BrokerConfig())
    links = [RecordingLink() for _ in range(5)]
    for n, link in enumerate(links):
        hub.connect(admission(f"m{n}", "fan"), link)
    outsider = RecordingLink()
    hub.connect(admission("out", "elsewhere"), outsider)
    assert hub.deliver_to_room("fan", "hello")
    (first,) = links[0].deliveries
    assert first.text == "hello"
    assert all(link.deliveries == [first] and link.deliveries[0] is first for link in links)
    assert all(link.flushes == 1 for link in links)
    assert outsider.deliveries == []


class RecordingTransport:
    """A transport that takes every write whole and records the very objects written."""

    def __init__(self) -> None:
        self.writes: list[bytes | memoryview] = []

    async def receive(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def send_nowait(self, data: bytes | memoryview) -> int:
        self.writes.append(data)
        return len(data)

    async def send_all(self, data: bytes | memoryview) -> None:
        self.writes.append(data)

    def shutdown_write(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_room_message_is_framed_once_for_all_members(nursery: trio.Nursery) -> None:
    """Through the hub to real WebSocket connections (over recording transports), every
    member writes the very same frame bytes object: the frame is made once."""
    hub = Hub(BrokerConfig())
    transports = []
    for n in range(5):
        transport = RecordingTransport()
        conn = WebSocketConnection(
            transport, nursery, max_message_size=1 << 16, queue_bytes=1 << 20, pause_bytes=1 << 17
        )
        conn.protocol.receive_data(handshake())
        (request,) = conn.protocol.events_received()
        response = conn.handshake_response(request)  # type: ignore[arg-type]
        assert response.status_code == 101
        conn.accept(response)
        hub.connect(admission(f"m{n}", "fan"), conn)
        transports.append(transport)
    before = [len(t.writes) for t in transports]
    hub.deliver_to_room("fan", "framed once")
    frames = [t.writes[n:] for t, n in zip(transports, before, strict=True)]
    assert all(len(written) == 1 for written in frames)
    first = frames[0][0]
    assert first == text_frame(b"framed once")
    assert all(written[0] is first for written in frames)


# ---------------------------------------------------------------------- 8. compression

COMPRESSIBLE = "the same words again and again, " * 600 + "caf\u00e9 \u2603"


async def test_compression_is_negotiated_when_enabled(nursery: trio.Nursery) -> None:
    """With compression=True, a client offering permessage-deflate gets it, and messages
    round-trip through the backend intact."""
    address, _ = await start(nursery, compression=True)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "z", compression=True)
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        for text in (COMPRESSIBLE, "short", COMPRESSIBLE[::-1]):
            await ws.send(text)
            assert await ws.receive() == text
        await ws.close()


async def test_compression_is_off_by_default(nursery: trio.Nursery) -> None:
    """By default, a client offering permessage-deflate does not get it, and messages still
    round-trip."""
    address, _ = await start(nursery)
    with trio.fail_after(DEADLINE):
        ws = await connect(address, "z", compression=True)
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        await ws.send(COMPRESSIBLE)
        assert await ws.receive() == COMPRESSIBLE
        await ws.close()


# ---------------------------------------------------------------------- 9. lenient `accepted`


class RawBackend:
    """A backend speaking JSON lines over TCP by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    async def event(self) -> dict[str, Any]:
        """The next event that is not a heartbeat (nor the broker's hello)."""
        while True:
            while b"\n" not in self._buffer:
                chunk = await self.stream.receive_some()
                assert chunk, "the broker closed the backend link"
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            event: dict[str, Any] = json.loads(line)
            if event["action"] not in ("heartbeat", "hello"):
                return event

    async def send(self, frame: dict[str, Any]) -> None:
        await self.stream.send_all(json.dumps(frame).encode() + b"\n")


ANSWERS: dict[str, tuple[dict[str, Any], int]] = {
    "accepted missing": ({}, 101),
    "accepted null": ({"accepted": None}, 101),
    "accepted 1": ({"accepted": 1}, 101),
    "accepted 0": ({"accepted": 0}, 101),
    'accepted "no"': ({"accepted": "no"}, 101),
    "accepted true": ({"accepted": True}, 101),
    "accepted false": ({"accepted": False}, 4403),
}


@pytest.mark.parametrize(("accepted", "status"), ANSWERS.values(), ids=ANSWERS.keys())
async def test_only_accepted_false_rejects(
    nursery: trio.Nursery, accepted: dict[str, Any], status: int
) -> None:
    """A response admits the client unless its accepted is JSON false (the reference
    broker's rule); a rejected handshake is upgraded and closed with 4403."""
    address: BrokerAddress = await nursery.start(serve_broker, broker_config())
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", address.tcp_port)
        async with stream:
            backend = RawBackend(stream)
            await address.hub.wait_backends(1)

            async def answer() -> None:
                request = await backend.event()
                assert request["action"] == "connection_request"
                params = {"client_id": "c", "room_id": "r", **accepted}
                await backend.send(
                    {"action": "response", "request_id": request["request_id"], "params": params}
                )

            async with trio.open_nursery() as tasks:
                tasks.start_soon(answer)
                ws = await WSClient.connect(address.ws_port, "/ws/x")
            if status != 101:
                closed, _ = await ws.wait_closed()
                await ws.aclose()
                assert (closed.code, closed.reason) == (status, "refused by the backend")
            if status == 101:
                joined = await backend.event()
                assert joined["action"] == "new_connection"
                assert joined["params"]["context"]["client_id"] == "c"
                assert joined["params"]["context"]["room_id"] == "r"
                await ws.send("hi")
                said = await backend.event()
                assert (said["action"], said["params"]["message"]) == ("new_message", "hi")
                await ws.close()
            else:
                assert address.statistics().hub.rejected == 1
