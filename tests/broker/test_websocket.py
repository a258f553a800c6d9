"""The broker's WebSocket port over real loopback sockets, against a fake hub: plain HTTP,
handshake checks and refusals, sessions, slow and oversized clients, timeouts and shutdown."""

from __future__ import annotations

import gc
import itertools
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import WebSocketConnection

from strands_trio.broker import Admission, BrokerConfig, ClientLink, Delivery, Handshake
from strands_trio.broker._connection import text_frame
from strands_trio.broker._front import Route, WebSocketFront
from strands_trio.broker._handshake import (
    client_address,
    origin_allowed,
    select_subprotocol,
    shape_handshake,
)
from strands_trio.broker._output import Output

from .._net import Changes, self_signed_certificate

ACCEPT = Admission(accepted=True, client_id="c1", room_id="room")
#: A bound on every test; the timeouts under test are a fraction of it.
DEADLINE = 10


class FakeHub:
    """Implements exactly the hub methods the front calls, and records every call."""

    def __init__(self, admission: Admission = ACCEPT, *, echo: int = 0) -> None:
        self.admission = admission
        #: Answer each message with a reply of this many bytes, as a backend would.
        self.echo = echo
        self.admit_gate: trio.Event | None = None
        self.requests: list[tuple[dict[str, list[str]], str, str]] = []
        self.links: dict[int, ClientLink] = {}
        self.messages: list[tuple[int, str]] = []
        self.disconnected: list[int] = []
        self._ids = itertools.count(1)
        self._changes = Changes()
        self.wait_for = self._changes.wait_for

    async def admit(self, handshake: Handshake) -> Admission:
        self.requests.append((handshake.headers, handshake.url, handshake.remote_addr))
        self._changes.pulse()
        if self.admit_gate is not None:
            await self.admit_gate.wait()
        return self.admission

    def connect(self, admission: Admission, link: ClientLink) -> int:
        handle = next(self._ids)
        self.links[handle] = link
        self._changes.pulse()
        return handle

    def message(self, handle: int, text: str) -> bool:
        if text == "crash":
            raise RuntimeError("the hub failed")
        self.messages.append((handle, text))
        self._changes.pulse()
        if self.echo:
            self.send(handle, "r" * self.echo)
        return False

    async def wait_ready(self, handle: int) -> None:
        await trio.lowlevel.checkpoint()

    def disconnect(self, handle: int) -> None:
        self.disconnected.append(handle)
        self._changes.pulse()

    def send(self, handle: int, *texts: str) -> list[bool]:
        """Deliver *texts* to a client's link, then flush it, as the hub does."""
        link = self.links[handle]
        results = [link.deliver(Delivery(text)) for text in texts]
        link.flush()
        return results


async def start(
    nursery: trio.Nursery,
    hub: FakeHub,
    *,
    routes: Mapping[str, Route] | None = None,
    **settings: Any,
) -> int:
    """Start a WebSocketFront on 127.0.0.1 and a free port, which it returns."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, **settings)
    front = WebSocketFront(hub, config, routes=routes)  # type: ignore[arg-type]
    hub.front = front  # type: ignore[attr-defined]
    return int(await nursery.start(front.serve))


def front_of(hub: FakeHub) -> WebSocketFront:
    front = hub.front  # type: ignore[attr-defined]
    assert isinstance(front, WebSocketFront)
    return front


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw *request* bytes and read the whole answer: (status, headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(":", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, v in headers.items()}, body


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    """A raw HTTP request."""
    return "\r\n".join([f"{method} {path} HTTP/{version}", "Host: x", *headers, "", ""]).encode()


def upgrade(path: str = "/ws/chat", *headers: str, version: str = "13") -> bytes:
    """A raw WebSocket handshake request."""
    return get(
        path,
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"Sec-WebSocket-Version: {version}",
        *headers,
    )


def ws_url(port: int, path: str = "/ws/chat") -> str:
    return f"ws://127.0.0.1:{port}{path}"


async def rejected_status(port: int, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """The HTTP status a WebSocket handshake to /ws/chat with *headers* is refused with.

    The handshake is sent raw: trio-websocket's client leaves its socket open when it is
    refused (see test_trio_websocket_client_sees_the_refusal_status).
    """
    extra = [f"{name.decode()}: {value.decode()}" for name, value in headers or []]
    status, _, _ = await http(port, upgrade("/ws/chat", *extra))
    assert status != 101
    return status


@asynccontextmanager
async def client(url: str, *args: Any, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """trio_websocket.open_websocket_url, with its socket closed on the way out: trio-websocket
    0.12.2's client leaves it open when the server closes first."""
    ws: WebSocketConnection | None = None
    try:
        async with trio_websocket.open_websocket_url(url, *args, **kwargs) as ws:
            yield ws
    finally:
        if ws is not None:
            await ws._stream.aclose()


async def close_code(ws: trio_websocket.WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes *ws*; its close code and reason."""
    while True:
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
            break
    assert reason is not None
    return reason.code, reason.reason


# ---------------------------------------------------------------------- plain HTTP


async def test_routes_answer_with_their_status_type_and_body(nursery: trio.Nursery) -> None:
    """A route is answered with what its function returns, given the raw query string, and
    the connection closes."""
    hub = FakeHub()
    routes = {
        "/demo": lambda query: (200, "text/html; charset=utf-8", f"<h1>{query}</h1>".encode())
    }
    port = await start(nursery, hub, routes=routes)
    with trio.fail_after(DEADLINE):
        status, headers, body = await http(port, get("/demo?name=ann"))
        assert (status, headers["content-type"], body) == (
            200,
            "text/html; charset=utf-8",
            b"<h1>name=ann</h1>",
        )
        assert headers["connection"] == "close"
        # Health checkers that speak HTTP/1.0 get their answer too.
        assert (await http(port, get("/demo", version="1.0")))[0] == 200
    assert front_of(hub).statistics().http_requests == 2


async def test_failing_route_is_a_500(nursery: trio.Nursery) -> None:
    """A route that raises is answered with 500, and the port keeps serving."""
    hub = FakeHub()
    routes: dict[str, Route] = {"/broken": lambda query: (1 // 0, "", b""), "/ok": ok_route}
    port = await start(nursery, hub, routes=routes)
    with trio.fail_after(DEADLINE):
        assert (await http(port, get("/broken")))[0] == 500
        assert (await http(port, get("/ok")))[0] == 200


def ok_route(query: str) -> tuple[int, str, bytes]:
    return 200, "text/plain", b"ok\n"


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (get("/nowhere"), 404),
        (get("/ok", "Content-Length: 0", method="POST"), 405),
        (get("/ws/chat"), 426),  # a WebSocket path without the upgrade
        (upgrade("/chat"), 404),  # an upgrade outside /ws/
        (upgrade("/ws"), 404),  # no trailing slash: not under /ws/ (the reference redirects)
        (upgrade("/ok"), 404),  # an upgrade to a route
        (upgrade("/ws/chat", version="8"), 426),
        (
            get("/ws/x", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"),
            400,
        ),  # no key
        (
            get("/ws/x", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: a"),
            426,
        ),  # no Connection: Upgrade
        (upgrade("/ws/x").replace(b"GET", b"PUT", 1), 405),
        (upgrade("/ws/x").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 505),
        (upgrade("/ws/x", "Upgrade: websocket"), 426),  # two Upgrade headers
        (upgrade("/ws/x", "Sec-WebSocket-Version: 13"), 400),  # two versions
        (upgrade("/ws/x").replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), 400),  # 5-byte key
        (upgrade("/ws/x").replace(b"Upgrade: websocket", b"Upgrade: h2c, websocket"), 426),
        (upgrade("/ws/x").replace(b"Host: x\r\n", b""), 400),  # no Host
        (upgrade("/ws/x", "Host: y"), 400),  # two Host headers
        (b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n", 400),
        (get("/ok", "X-Big: " + "a" * 20_000), 431),
        (get("/ok", *[f"X-{i}: {'a' * 1000}" for i in range(20)]), 431),
    ],
)
async def test_other_requests_get_an_error_status(
    nursery: trio.Nursery, request_bytes: bytes, expected: int
) -> None:
    """Unknown paths, wrong methods, malformed handshakes and garbage get the right HTTP error,
    and no backend is asked."""
    hub = FakeHub()
    port = await start(nursery, hub, routes={"/ok": ok_route})
    with trio.fail_after(DEADLINE):
        status, headers, _ = await http(port, request_bytes)
    assert status == expected
    assert hub.requests == []
    if expected == 426:
        assert headers["sec-websocket-version"] == "13"
        assert headers["upgrade"] == "websocket"
    if expected == 405:
        assert headers["allow"] == "GET"


async def test_garbage_is_counted_as_a_bad_request(nursery: trio.Nursery) -> None:
    """A connection that sends something other than HTTP is counted under bad_request."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        await http(port, b"hello?\r\n\r\n")
    assert front_of(hub).statistics().refused["bad_request"] == 1


# ---------------------------------------------------------------------- handshakes


async def test_accepted_handshake_asks_the_hub_with_go_shaped_request(
    nursery: trio.Nursery,
) -> None:
    """The hub gets Go-canonical multi-valued headers without Host, the path without its
    query string, and the peer's ip:port; the client is connected with a link."""
    hub = FakeHub()
    port = await start(nursery, hub)
    headers = [(b"x-multi", b"one"), (b"X-MULTI", b"two"), (b"Authorization", b"Bearer t")]
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port, "/ws/chat?token=secret"), extra_headers=headers) as ws:
            await hub.wait_for(lambda: 1 in hub.links)
            local_port = ws.local.port  # type: ignore[union-attr]
    wire, url, remote_addr = hub.requests[0]
    assert url == "/ws/chat"
    assert remote_addr == f"127.0.0.1:{local_port}"
    assert wire["X-Multi"] == ["one", "two"]
    assert wire["Authorization"] == ["Bearer t"]
    assert wire["Sec-Websocket-Version"] == ["13"]
    assert wire["Upgrade"] == ["websocket"]
    assert "Sec-Websocket-Key" in wire
    assert "Host" not in wire


@pytest.mark.parametrize(
    ("path", "pass_query_string", "expected"),
    [
        ("/ws/chat?room=a&b=c", False, "/ws/chat"),
        ("/ws/chat?room=a&b=c", True, "/ws/chat?room=a&b=c"),
        ("/ws/a%20b", False, "/ws/a b"),
    ],
)
async def test_url_is_the_decoded_path_with_the_query_only_on_request(
    nursery: trio.Nursery, path: str, pass_query_string: bool, expected: str
) -> None:
    """The url is Go's decoded r.URL.Path; the query string is kept only with
    pass_query_string."""
    hub = FakeHub()
    port = await start(nursery, hub, pass_query_string=pass_query_string)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port, path)):
            pass
    assert hub.requests[0][1] == expected


@pytest.mark.parametrize("status", [403, 503])
async def test_refused_admission_is_answered_with_its_status(
    nursery: trio.Nursery, status: int
) -> None:
    """With refuse_with="http", when the hub refuses, the client sees the admission's HTTP
    status and no upgrade."""
    hub = FakeHub(Admission(accepted=False, status=status, reason="no"))
    port = await start(nursery, hub, refuse_with="http")
    with trio.fail_after(DEADLINE):
        assert await rejected_status(port) == status
    assert len(hub.requests) == 1
    assert hub.links == {}
    assert front_of(hub).statistics().refused["backend"] == 1


async def test_a_refusal_is_a_close_code_after_the_upgrade(nursery: trio.Nursery) -> None:
    """By default, when the hub refuses, the client is upgraded and closed at once with the
    admission's close code and reason (cut to 123 bytes of whole characters), is never
    connected nor counted as a session, and is counted as refused by the backend."""
    reason = "token expired " + "é" * 100
    hub = FakeHub(Admission(accepted=False, status=401, close_code=4401, reason=reason))
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            code, got = await close_code(ws)
    assert code == 4401
    assert got == reason.encode()[:123].decode(errors="ignore")
    assert len(got.encode()) == 122
    assert hub.links == {}
    statistics = front_of(hub).statistics()
    assert (statistics.refused["backend"], statistics.accepted) == (1, 0)


async def test_trio_websocket_client_sees_the_refusal_status(nursery: trio.Nursery) -> None:
    """With refuse_with="http", a trio-websocket client refused by the backend gets
    ConnectionRejected with the admission's status."""
    hub = FakeHub(Admission(accepted=False, status=403, reason="rejected by the backend"))
    port = await start(nursery, hub, refuse_with="http")
    with trio.fail_after(DEADLINE):
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(ws_url(port)):
                pass
        assert info.value.status_code == 403
        assert info.value.body == b"rejected by the backend\n"
    # trio-websocket 0.12.2 does not close a refused client's socket: collect it quietly.
    del info
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.parametrize(
    ("origin", "allowed_origins", "accepted"),
    [
        (None, (), True),  # not a browser
        ("http://127.0.0.1:{port}", (), True),  # same origin
        ("https://evil.example", (), False),
        ("https://evil.example", ("https://app.example",), False),
        ("https://app.example", ("https://app.example",), True),
        ("https://APP.example/", ("https://app.example",), True),
        ("https://evil.example", ("*",), True),
        ("null", (), False),
    ],
)
async def test_origin_is_checked_before_the_backend(
    nursery: trio.Nursery, origin: str | None, allowed_origins: tuple[str, ...], accepted: bool
) -> None:
    """A foreign Origin is refused with 403 before any backend is asked; no Origin, the same
    origin, a listed one or '*' are let through."""
    hub = FakeHub()
    port = await start(nursery, hub, allowed_origins=allowed_origins)
    headers = [] if origin is None else [(b"Origin", origin.format(port=port).encode())]
    with trio.fail_after(DEADLINE):
        if accepted:
            async with client(ws_url(port), extra_headers=headers):
                pass
            assert len(hub.requests) == 1
        else:
            assert await rejected_status(port, headers) == 403
            assert hub.requests == []
            assert front_of(hub).statistics().refused["origin"] == 1


async def test_connections_per_ip_are_limited_with_429(nursery: trio.Nursery) -> None:
    """Past max_connections_per_ip a client's address gets 429; a closed socket frees its
    slot."""
    hub = FakeHub()
    port = await start(nursery, hub, max_connections_per_ip=1)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)):
            assert front_of(hub).statistics().slots.addresses == 1
            assert await rejected_status(port) == 429
        await hub.wait_for(lambda: hub.disconnected == [1])
        await trio.testing.wait_all_tasks_blocked(0.01)
        assert front_of(hub).statistics().slots.used == 0
        async with client(ws_url(port)):
            pass
    assert front_of(hub).statistics().refused["per_ip"] == 1
    assert len(hub.requests) == 2


async def test_total_connections_are_limited_with_503_even_while_admitting(
    nursery: trio.Nursery,
) -> None:
    """A handshake waiting for its backend holds a slot: past max_connections the next one gets
    503 and the hub is not asked."""
    hub = FakeHub()
    hub.admit_gate = trio.Event()
    port = await start(nursery, hub, max_connections=1)
    with trio.fail_after(DEADLINE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as waiting:
            await waiting.send_all(upgrade())
            await hub.wait_for(lambda: len(hub.requests) == 1)
            assert await rejected_status(port) == 503
            hub.admit_gate.set()
            assert (await waiting.receive_some()).startswith(b"HTTP/1.1 101 ")
    assert len(hub.requests) == 1
    assert front_of(hub).statistics().refused["full"] == 1


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    nursery: trio.Nursery,
) -> None:
    """From a trusted peer the client is the right-most untrusted X-Forwarded-For address
    (port 0) and the per-IP limit applies to it; from anyone else the header is ignored."""
    hub = FakeHub()
    trusted = await start(
        nursery, hub, trusted_proxies=("127.0.0.1", "10.0.0.0/8"), max_connections_per_ip=1
    )
    spoof = [(b"X-Forwarded-For", b"198.51.100.1, 203.0.113.7"), (b"X-Forwarded-For", b"10.1.2.3")]
    with trio.fail_after(DEADLINE):
        async with client(ws_url(trusted), extra_headers=spoof):
            other = [(b"X-Forwarded-For", b"192.0.2.9")]
            async with client(ws_url(trusted), extra_headers=other):
                assert await rejected_status(trusted, spoof) == 429
    assert [request[2] for request in hub.requests] == ["203.0.113.7:0", "192.0.2.9:0"]
    assert hub.requests[0][0]["X-Forwarded-For"] == ["198.51.100.1, 203.0.113.7", "10.1.2.3"]

    untrusting = FakeHub()
    port = await start(nursery, untrusting)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port), extra_headers=spoof) as ws:
            local_port = ws.local.port  # type: ignore[union-attr]
    assert untrusting.requests[0][2] == f"127.0.0.1:{local_port}"


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        (("127.0.0.1", 5), [], ("127.0.0.1", "127.0.0.1:5")),
        (("::1", 5), [], ("::1", "[::1]:5")),
        (("::ffff:127.0.0.1", 5), [], ("127.0.0.1", "127.0.0.1:5")),
        (("192.0.2.1", 5), ["198.51.100.1"], ("192.0.2.1", "192.0.2.1:5")),  # untrusted peer
        (("127.0.0.1", 5), ["198.51.100.1, 10.0.0.1"], ("198.51.100.1", "198.51.100.1:0")),
        (("127.0.0.1", 5), ["10.0.0.2, 10.0.0.1"], ("10.0.0.2", "10.0.0.2:0")),  # all trusted
        (("127.0.0.1", 5), ["2001:db8::1"], ("2001:db8::1", "[2001:db8::1]:0")),
        (("127.0.0.1", 5), ["198.51.100.1:4711"], ("198.51.100.1", "198.51.100.1:0")),
        (("127.0.0.1", 5), ["junk"], ("127.0.0.1", "127.0.0.1:5")),
        (("127.0.0.1", 5), [" , "], ("127.0.0.1", "127.0.0.1:5")),
    ],
)
def test_client_address_table(
    peer: tuple[str, int], forwarded: list[str], expected: tuple[str, str]
) -> None:
    """client_address follows X-Forwarded-For only from trusted peers, right to left."""
    config = BrokerConfig(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    assert client_address(peer, forwarded, config.trusts) == expected


@pytest.mark.parametrize(
    ("origins", "host", "allowed", "expected"),
    [
        ([], "h:1", (), True),
        (["http://h:1"], "h:1", (), True),
        (["http://h:1"], "h:2", (), False),
        (["http://h:1"], None, (), False),
        (["http://h:1", "http://evil"], "h:1", (), False),
        (["https://a.example"], "h", ("https://a.example",), True),
        (["garbage"], "garbage", (), False),
    ],
)
def test_origin_allowed_table(
    origins: list[str], host: str | None, allowed: tuple[str, ...], expected: bool
) -> None:
    """origin_allowed lets through no origin, the same origin and listed origins only."""
    assert origin_allowed(origins, host, allowed) is expected


@pytest.mark.parametrize("piece", [1, 7, 10_000])
async def test_a_head_fed_in_pieces_is_read_whole(nursery: trio.Nursery, piece: int) -> None:
    """A handshake arriving a byte (or a few) at a time reaches the hub as one request, with
    its decoded path and repeated headers in order."""
    hub = FakeHub()
    port = await start(nursery, hub)
    data = upgrade("/ws/r%C3%A9?x=1", "X-A: 1", "x-a: 2")
    with trio.fail_after(DEADLINE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            for i in range(0, len(data), piece):
                await stream.send_all(data[i : i + piece])
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 101 ")
    headers, url, _ = hub.requests[0]
    assert (url, headers["X-A"]) == ("/ws/ré", ["1", "2"])


def test_handshake_shape_table() -> None:
    """shape_handshake gives Go's canonical names, every value in order, no Host, values
    re-read as UTF-8 (U+FFFD for invalid bytes), and the decoded path without its query."""
    latin1 = "h\xc3\xa9\xff"  # the bytes h, é in UTF-8, then 0xFF, as the parser decodes them
    shaped = shape_handshake(
        [("host", "x"), ("x-multi", "one"), ("X-MULTI", "two"), ("x-name", latin1)],
        "/ws/a%20b?token=t",
        "1.2.3.4:5",
    )
    assert shaped == Handshake(
        headers={"X-Multi": ["one", "two"], "X-Name": ["hé\ufffd"]},
        url="/ws/a b",
        remote_addr="1.2.3.4:5",
        query="token=t",
    )
    kept = shape_handshake([], "/ws/a?token=t", "1.2.3.4:5", pass_query_string=True)
    assert (kept.url, kept.query) == ("/ws/a?token=t", "token=t")
    assert shape_handshake([], "/ws/a", "1.2.3.4:5").query == ""


@pytest.mark.parametrize(
    ("offered", "allowed", "selected"),
    [
        ([], ("strands",), None),
        (["strands", "bearer.x.y.z"], ("strands",), "strands"),
        (["bearer.x.y.z", "strands"], ("strands",), "strands"),  # never the token
        (["bearer.x.y.z"], ("strands",), None),  # no refusal either
        (["chat", "strands"], ("strands", "chat"), "chat"),  # the client's order wins
        (["strands"], (), None),
    ],
)
def test_select_subprotocol_table(
    offered: list[str], allowed: tuple[str, ...], selected: str | None
) -> None:
    """The first offered subprotocol that is allowed is selected; none is not a refusal."""
    assert select_subprotocol(offered, allowed) == selected


async def test_a_token_in_the_subprotocol_reaches_the_backend_not_the_answer(
    nursery: trio.Nursery,
) -> None:
    """A client offering ["strands", "bearer.<jwt>"] gets "strands" selected (a browser
    needs one of its offers back), and the hub sees the whole offer in the request's
    Sec-Websocket-Protocol header; a client offering nothing still connects."""
    hub = FakeHub()
    port = await start(nursery, hub)
    token = "bearer.eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2ln-_"
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port), subprotocols=["strands", token]) as ws:
            assert ws.subprotocol == "strands"
        async with client(ws_url(port)) as ws:
            assert ws.subprotocol is None
    assert hub.requests[0][0]["Sec-Websocket-Protocol"] == [f"strands, {token}"]


def test_text_frame_is_what_websockets_would_send() -> None:
    """text_frame gives the same bytes as websockets' own serializer, at every length
    encoding."""
    from websockets.frames import Frame, Opcode

    for size in (0, 125, 126, 65535, 65536):
        payload = b"x" * size
        assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


# ---------------------------------------------------------------------- sessions


async def test_messages_flow_both_ways(nursery: trio.Nursery) -> None:
    """A client's text reaches hub.message with its handle, and link.deliver reaches the
    client in order."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await ws.send_message("hello")
            await hub.wait_for(lambda: hub.messages == [(1, "hello")])
            assert hub.send(1, "one", "two") == [True, True]
            assert [await ws.get_message(), await ws.get_message()] == ["one", "two"]
        await hub.wait_for(lambda: hub.disconnected == [1])
    stats = front_of(hub).statistics()
    assert (stats.accepted, stats.open_websockets) == (1, 0)


async def test_client_close_disconnects_exactly_once(nursery: trio.Nursery) -> None:
    """A client that closes is disconnected from the hub at once (the writer does not wait for
    shutdown_timeout) and only once, and its link refuses later deliveries."""
    hub = FakeHub()
    port = await start(nursery, hub, shutdown_timeout=60)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)):
            await hub.wait_for(lambda: 1 in hub.links)
        await hub.wait_for(lambda: hub.disconnected == [1])
        await trio.testing.wait_all_tasks_blocked(0.01)
    assert hub.disconnected == [1]
    assert hub.send(1, "late") == [False]
    assert front_of(hub).statistics().slots.used == 0


async def test_binary_frames_are_passed_on_as_replaced_utf8(nursery: trio.Nursery) -> None:
    """A binary message reaches the hub as text, undecodable bytes replaced, and is counted."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await ws.send_message(b"\xffok\xc3\xa9")
            await hub.wait_for(lambda: len(hub.messages) == 1)
    assert hub.messages == [(1, "\ufffdoké")]
    assert front_of(hub).statistics().binary_messages == 1


async def test_hub_close_flushes_then_closes_with_the_code(nursery: trio.Nursery) -> None:
    """link.close(code, reason) writes what was queued, then closes with that code and
    reason; the hub is told once."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await hub.wait_for(lambda: 1 in hub.links)
            hub.send(1, "goodbye")
            hub.links[1].close(4000, "kicked")
            hub.links[1].close(4001, "ignored: the first close decides")
            assert await ws.get_message() == "goodbye"
            assert await close_code(ws) == (4000, "kicked")
        await hub.wait_for(lambda: hub.disconnected == [1])


async def test_hub_failure_closes_that_client_with_1011(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """An error in the hub while handling a message closes that client with 1011, disconnects
    it, is logged, and other clients go on."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as other, client(ws_url(port)) as ws:
            await ws.send_message("crash")
            assert await close_code(ws) == (1011, "internal error")
            await hub.wait_for(lambda: hub.disconnected == [2])
            await other.send_message("still here")
            await hub.wait_for(lambda: hub.messages == [(1, "still here")])
    assert "WebSocket session failed" in caplog.text


@pytest.mark.parametrize("reset", [False, True])
async def test_client_leaving_while_admitted_is_no_error(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, reset: bool
) -> None:
    """A client that hangs up (or resets) while its backend decides frees its slot, and the
    hub sees a disconnect for every connect; nothing is logged as an error."""
    hub = FakeHub()
    hub.admit_gate = trio.Event()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(upgrade())
            await hub.wait_for(lambda: len(hub.requests) == 1)
            if reset:  # close with an RST: the 101 then cannot be sent
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        await trio.testing.wait_all_tasks_blocked(0.05)
        hub.admit_gate.set()
        await trio.testing.wait_all_tasks_blocked(0.05)
    assert front_of(hub).statistics().slots.used == 0
    assert hub.disconnected == list(hub.links)
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


async def test_unsendable_close_code_becomes_1000(nursery: trio.Nursery) -> None:
    """A close code no endpoint may send (here from a backend's close action) closes with
    1000 instead of breaking the close frame."""
    hub = FakeHub()
    port = await start(nursery, hub)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await hub.wait_for(lambda: 1 in hub.links)
            hub.links[1].close(70_000, "odd")
            assert await close_code(ws) == (1000, "odd")
        await hub.wait_for(lambda: hub.disconnected == [1])


async def test_a_client_whose_replies_back_up_is_read_no_more(nursery: trio.Nursery) -> None:
    """A client that sends without reading its replies is read no more once they back up
    (TCP then pushes back on it), and is not closed for it; once it reads, it is read again
    and nothing was lost."""
    hub = FakeHub(echo=20_000)
    port = await start(nursery, hub, client_queue_bytes=400_000)  # reading pauses at 50,000
    count = 200  # replies: 4 MB, far more than the socket buffers and the queue hold
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            async with trio.open_nursery() as senders:

                async def send_all() -> None:
                    for n in range(count):
                        await ws.send_message(f"m{n}")

                senders.start_soon(send_all)
                await trio.testing.wait_all_tasks_blocked(0.05)
                stalled_at = len(hub.messages)
                assert stalled_at < count  # the broker stopped reading
                received = 0
                while received < count:
                    assert len(await ws.get_message()) == 20_000
                    received += 1
            assert [text for _, text in hub.messages] == [f"m{n}" for n in range(count)]
    assert front_of(hub).statistics().slow_clients_closed == 0


async def test_slow_client_is_closed_with_1008(nursery: trio.Nursery) -> None:
    """A client that does not read while messages pile up past client_queue_bytes is closed
    with 1008 and counted, with what it had not been sent; later deliveries say False. A
    message alone in an empty queue may be larger than the bound."""
    hub = FakeHub()
    port = await start(nursery, hub, client_queue_bytes=100_000)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await hub.wait_for(lambda: 1 in hub.links)
            results = []
            while not results or results[-1]:  # until the socket's buffers and ours are full
                results += hub.send(1, "x" * 50_000)
            assert hub.send(1, "late") == [False]
            assert await close_code(ws) == (1008, "too slow: message queue full")
        await hub.wait_for(lambda: hub.disconnected == [1])
    stats = front_of(hub).statistics()
    assert stats.slow_clients_closed == 1
    assert stats.messages_lost["too_slow"] >= 1


async def test_oversized_message_closes_with_1009(nursery: trio.Nursery) -> None:
    """A message larger than max_message_size closes the socket with 1009 and the hub is told
    the client left, without the message."""
    hub = FakeHub()
    port = await start(nursery, hub, max_message_size=16)
    with trio.fail_after(DEADLINE):
        async with client(ws_url(port)) as ws:
            await ws.send_message("x" * 100)
            code, _ = await close_code(ws)
        await hub.wait_for(lambda: hub.disconnected == [1])
    assert code == 1009
    assert hub.messages == []


async def test_websocket_over_tls(nursery: trio.Nursery, tmp_path: Any) -> None:
    """With an ssl_context the port speaks wss://, and plain HTTP to it is dropped as a bad
    request."""
    server_context, client_context = tls_contexts(tmp_path)
    hub = FakeHub()
    port = await start(nursery, hub, ssl_context=server_context)
    with trio.fail_after(DEADLINE):
        async with client(f"wss://127.0.0.1:{port}/ws/secure", client_context) as ws:
            await ws.send_message("over tls")
            await hub.wait_for(lambda: hub.messages == [(1, "over tls")])
            hub.send(1, "back")
            assert await ws.get_message() == "back"
        async with await trio.open_tcp_stream("127.0.0.1", port) as plain:
            await plain.send_all(get("/healthz"))
            while await plain.receive_some():
                pass  # whatever TLS says to plain HTTP, then the connection closes
    assert front_of(hub).statistics().refused["bad_request"] == 1


# ---------------------------------------------------------------------- timeouts, shutdown


@pytest.mark.parametrize("sent", [b"", b"GET /ws/chat HTTP/1.1\r\nHost: x\r\n"])
async def test_silent_or_slow_client_holds_a_slot_until_the_handshake_timeout(
    nursery: trio.Nursery, sent: bytes
) -> None:
    """A TCP connection that sends nothing, or half a head, holds its slot from accept until
    handshake_timeout closes it (counted): meanwhile a full broker refuses handshakes (503)
    but still answers plain HTTP from its headroom; then the slot is free again."""
    hub = FakeHub()
    port = await start(
        nursery, hub, handshake_timeout=0.3, max_connections=1, routes={"/ok": ok_route}
    )
    with trio.fail_after(DEADLINE):
        start_time = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(sent)
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert front_of(hub).statistics().slots.used == 1
            assert await rejected_status(port) == 503
            assert (await http(port, get("/ok")))[0] == 200
            assert await stream.receive_some() == b""
        assert 0.25 < trio.current_time() - start_time < 2
        await trio.testing.wait_all_tasks_blocked(0.01)
        assert front_of(hub).statistics().slots.used == 0
        async with client(ws_url(port)):
            pass
    refused = front_of(hub).statistics().refused
    assert (refused["timeout"], refused["full"]) == (1, 1)


@asynccontextmanager
async def serving(hub: FakeHub, **settings: Any) -> AsyncIterator[tuple[int, trio.CancelScope]]:
    """serve_websockets in a nursery of its own, cancelled on exit; (port, its scope)."""
    async with trio.open_nursery() as nursery:
        port = await start(nursery, hub, **settings)
        yield port, nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_websockets_with_1001(nursery: trio.Nursery) -> None:
    """Cancelling serve_websockets closes open sockets with 1001 and disconnects each from the
    hub; the listener is gone afterwards."""
    hub = FakeHub()
    with trio.fail_after(DEADLINE):
        async with serving(hub, shutdown_timeout=5) as (port, scope):
            ws = await trio_websocket.connect_websocket_url(nursery, ws_url(port))
            await hub.wait_for(lambda: 1 in hub.links)
            hub.send(1, "last words")
            scope.cancel()
        assert await ws.get_message() == "last words"
        assert await close_code(ws) == (1001, "going away")
        assert hub.disconnected == [1]
        await ws._stream.aclose()
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_shutdown_is_bounded_when_clients_do_not_answer(nursery: trio.Nursery) -> None:
    """A client that never answers the close handshake, and one whose backend has not
    answered yet, do not hold shutdown past shutdown_timeout."""
    hub = FakeHub()
    with trio.fail_after(DEADLINE):
        async with serving(hub, shutdown_timeout=0.5) as (port, scope):
            mute = await trio.open_tcp_stream("127.0.0.1", port)
            await mute.send_all(upgrade())
            assert (await mute.receive_some()).startswith(b"HTTP/1.1 101 ")
            await hub.wait_for(lambda: 1 in hub.links)
            hub.admit_gate = trio.Event()  # the next handshake waits for its backend
            waiting = await trio.open_tcp_stream("127.0.0.1", port)
            await waiting.send_all(upgrade())
            await hub.wait_for(lambda: len(hub.requests) == 2)
            scope.cancel()
            start_time = trio.current_time()
        elapsed = trio.current_time() - start_time
        assert 0.4 < elapsed < 2
        assert hub.disconnected == [1]
        assert await waiting.receive_some() == b""
        await mute.aclose()
        await waiting.aclose()


# ---------------------------------------------------------------------- helpers


def tls_contexts(tmp_path: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context that trusts it."""
    cert_file, key_file = self_signed_certificate(tmp_path, "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=cert_file)
    return server, client


class BrokenTransport:
    """A transport whose peer is gone: every write fails."""

    def send_nowait(self, data: bytes | memoryview) -> int:
        raise BrokenPipeError("gone")

    async def send_all(self, data: bytes | memoryview) -> None:
        raise BrokenPipeError("gone")

    def shutdown_write(self) -> None:
        pass


async def test_frames_a_broken_connection_never_wrote_are_counted_lost(
    nursery: trio.Nursery,
) -> None:
    """When writing to a client fails (it is gone), what was queued for it is counted lost,
    and later frames too, instead of piling up."""
    output = Output(BrokenTransport(), nursery)  # type: ignore[arg-type]
    output.queue(b"one")
    output.queue(b"two")
    output.flush()
    assert (output.broken, output.lost, output.size) == (True, 2, 0)
    output.queue(b"three")
    output.close()
    assert output.lost == 3
