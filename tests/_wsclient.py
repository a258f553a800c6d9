"""An independent WebSocket client for broker tests: websockets' sans-IO ``ClientProtocol``
driven over a Trio TCP stream. Every step is cancellable, the source address and receive
buffer can be chosen, and raw bytes can be mixed in (malformed frames, half requests)."""

from __future__ import annotations

import collections
import contextlib
import socket
from collections.abc import Sequence

import trio
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

__all__ = ["Closed", "Refused", "WSClient", "open_socket", "raw_exchange"]


class Refused(Exception):
    """The handshake was answered with something other than ``101``."""

    def __init__(self, status: int | None, response: Response | None) -> None:
        super().__init__(f"handshake refused with {status}")
        self.status = status
        self.response = response


class Closed(Exception):
    """The connection ended: ``code`` and ``reason`` of the server's close frame, or 1006
    and ``framed=False`` when it ended without one."""

    def __init__(self, code: int, reason: str, *, framed: bool) -> None:
        super().__init__(f"closed with {code} {reason!r}{'' if framed else ' (no close frame)'}")
        self.code = code
        self.reason = reason
        self.framed = framed


async def open_socket(
    port: int, *, source: str = "127.0.0.1", receive_buffer: int | None = None
) -> trio.SocketStream:
    """A TCP stream to 127.0.0.1:*port* from the address *source* (any of 127/8 on Linux),
    with a small receive buffer if asked (set before connecting, so the window stays small)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def raw_exchange(
    port: int, data: bytes, *, source: str = "127.0.0.1"
) -> tuple[int | None, dict[str, list[str]], bytes]:
    """Send *data* as it is, read until the server closes: ``(status, headers, body)``
    (status ``None`` when nothing came back; header names in lower case)."""
    stream = await open_socket(port, source=source)
    async with stream:
        await stream.send_all(data)
        answer = await read_to_end(stream)
    if not answer:
        return None, {}, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), headers, body


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the peer sends until it closes (a reset ends it too)."""
    data = b""
    while True:
        try:
            chunk = await stream.receive_some()
        except trio.BrokenResourceError:  # reset: what was read is what there is
            return data
        if not chunk:
            return data
        data += chunk


class WSClient:
    """One WebSocket client connection (made by :meth:`connect`)."""

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.response: Response | None = None
        self._messages: collections.deque[str] = collections.deque()
        self._fragments: list[bytes] = []
        self._closed: Closed | None = None
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws/",
        headers: Sequence[tuple[str, str]] = (),
        *,
        source: str = "127.0.0.1",
        compression: bool = False,
        receive_buffer: int | None = None,
        subprotocols: Sequence[str] | None = None,
    ) -> WSClient:
        """Open a WebSocket to ``ws://127.0.0.1:port/path`` with extra *headers*, offering
        *subprotocols* (the answer must then select one of them, as a browser requires).

        Raises:
            Refused: the server answered the handshake with another status (or closed).
        """
        stream = await open_socket(port, source=source, receive_buffer=receive_buffer)
        extensions = [ClientPerMessageDeflateFactory()] if compression else None
        protocol = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{port}{path}"),
            extensions=extensions,
            subprotocols=[Subprotocol(name) for name in subprotocols or ()] or None,
            max_size=None,
        )
        client = cls(stream, protocol)
        try:
            request = protocol.connect()
            for name, value in headers:
                request.headers[name] = value  # appends: repeated names stay repeated
            protocol.send_request(request)
            await client._write()
            while client.response is None:
                data = await stream.receive_some()
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                events = protocol.events_received()
                if events:
                    response = events[0]
                    assert isinstance(response, Response)
                    if response.status_code != 101 or protocol.handshake_exc is not None:
                        raise Refused(response.status_code, response)
                    client.response = response
                    client._take(events[1:])
                elif not data:
                    raise Refused(None, None)
        except BaseException:
            await stream.aclose()
            raise
        return client

    # ------------------------------------------------------------------ sending

    async def send(self, text: str) -> None:
        """Send a text message."""
        self.protocol.send_text(text.encode())
        await self._write()

    async def send_text_bytes(self, payload: bytes) -> None:
        """Send a text frame carrying *payload* as it is (valid UTF-8 or not)."""
        self.protocol.send_text(payload)
        await self._write()

    async def send_raw(self, data: bytes) -> None:
        """Write *data* on the socket, bypassing the protocol (malformed frames)."""
        async with self._send_lock:
            await self.stream.send_all(data)

    async def _write(self) -> None:
        async with self._send_lock:
            for data in self.protocol.data_to_send():
                if data:
                    await self.stream.send_all(data)

    # ------------------------------------------------------------------ receiving

    @property
    def closed(self) -> Closed | None:
        """How the connection ended, once it did."""
        return self._closed

    async def receive(self) -> str:
        """The next message (a binary one decoded as UTF-8).

        Raises:
            Closed: the connection ended and every message before the end was received.
        """
        while not self._messages:
            if self._closed is not None:
                raise self._closed
            await self._read()
        return self._messages.popleft()

    async def wait_closed(self) -> tuple[Closed, int]:
        """Read (discarding messages) until the connection ends; how, and how many messages
        were discarded."""
        discarded = 0
        while True:
            try:
                await self.receive()
            except Closed as closed:
                return closed, discarded
            discarded += 1

    async def _read(self) -> None:
        protocol = self.protocol
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError:
            data = b""
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        self._take(protocol.events_received())
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._write()  # the answer to a close frame
        if self._closed is None:
            if protocol.close_rcvd is not None:
                rcvd = protocol.close_rcvd
                self._closed = Closed(rcvd.code, rcvd.reason, framed=True)
            elif not data:
                self._closed = Closed(1006, "", framed=False)

    def _take(self, events: list[object]) -> None:
        for frame in events:
            opcode = getattr(frame, "opcode", None)
            if opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                continue
            self._fragments.append(frame.data)  # type: ignore[attr-defined]
            if frame.fin:  # type: ignore[attr-defined]
                self._messages.append(b"".join(self._fragments).decode("utf-8", "replace"))
                self._fragments = []

    # ------------------------------------------------------------------ closing

    async def close(self, code: int = 1000) -> Closed:
        """Start the closing handshake and read until the server ends it; how it ended."""
        if self._closed is None and self.protocol.close_sent is None:
            self.protocol.send_close(code)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._write()
        closed, _ = await self.wait_closed()
        await self.aclose()
        return closed

    async def aclose(self) -> None:
        """Close the socket at once."""
        await self.stream.aclose()
