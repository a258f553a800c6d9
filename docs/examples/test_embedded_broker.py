"""The embedded broker example, with real clients on loopback: a WebSocket client, and the
page the broker serves, with the origin check a browser's handshake meets."""

import trio
from trio_websocket import open_websocket

from .embedded_broker import main


async def http_get(port: int, path: str, *headers: str) -> bytes:
    """The whole answer to a plain HTTP/1.1 GET (the broker closes after every answer)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "", ""]
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all("\r\n".join(lines).encode())
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


def upgrade(origin: str) -> tuple[str, ...]:
    """A browser's handshake headers, from a page of *origin*."""
    return (
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
    )


async def test_embedded_broker() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(main, 0)
            async with open_websocket("127.0.0.1", port, "/ws/lobby", use_ssl=False) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "echo: hi"

            page = await http_get(port, "/")
            assert page.startswith(b"HTTP/1.1 200 ")
            assert b'from "/strands.js"' in page

            # A page of another port is another origin: 403 (a browser shows it as 1006).
            foreign = await http_get(port, "/ws/lobby", *upgrade("http://127.0.0.1:8000"))
            assert foreign.startswith(b"HTTP/1.1 403 ")
            # A page of the broker's origin (same host and port) may open a socket.
            origin = [("Origin", f"http://127.0.0.1:{port}")]
            async with open_websocket(
                "127.0.0.1", port, "/ws/lobby", use_ssl=False, extra_headers=origin
            ) as ws:
                await ws.send_message("same origin")
                assert await ws.get_message() == "echo: same origin"
            nursery.cancel_scope.cancel()
