"""One connection of the WebSocket port: websockets' sans-IO ``ServerProtocol`` driven by Trio.

Theory of operation. websockets' ``ServerProtocol`` does everything the RFC says: it parses
the HTTP request head, checks a handshake and builds its response (``accept``), parses frames
(masking, control frames, fragmentation, size limits, close codes) and says what to write and
when to half-close (``data_to_send``, ``SEND_EOF``). It does no I/O. This module is the thin
adapter that moves bytes for it, one :class:`WebSocketConnection` per accepted socket:

- **Reading** happens in the connection's own task, which is the only task a connection has
  while nothing backs up: :meth:`~WebSocketConnection.read_request` until the head is
  complete (bounded to :data:`MAX_HEAD_SIZE` bytes; the caller bounds the time), then
  :meth:`~WebSocketConnection.serve`, which feeds every chunk read to the protocol and hands
  each complete message to a callback inline, until the WebSocket is no longer open.
- **Writing** never waits. Whatever is to be sent (a message, a pong or close frame from the
  protocol, an HTTP answer) goes to the connection's :class:`~._output.Output`, which
  :meth:`~WebSocketConnection.flush` writes with one non-blocking ``send``; only a client that
  reads slowly (or TLS) costs a drain task (``_output.py``).
- **Frames to clients** are made by :func:`text_frame` once per message, not once per
  client: the same bytes go to every member of a room. A connection that negotiated
  permessage-deflate compresses each message itself (its compressor has state).
- **Back-pressure.** The output is bounded (``queue_bytes``): a message that would pass the
  bound closes the client with 1008 instead of growing memory (:meth:`deliver` returns
  ``False``). While the output holds more than ``pause_bytes`` (its own replies backing up),
  :meth:`serve` stops reading the client, so TCP pushes back on a client that sends faster
  than it reads; the callback can ask for a pause too (the broker's flow control toward
  backends).
- **Closing.** Close codes are the protocol's (1002 protocol error, 1009 too big) and ours
  (1007 for a text message that is not UTF-8, 1008, 1011, 1001 on shutdown, or a backend's
  code); each goes out in a close frame after whatever was queued before it. After the close
  frame the connection half-closes, then :meth:`finish` keeps reading (and discarding) until
  the client closes its side, so that the kernel never answers unread data with a reset
  that would destroy the close frame in flight; the caller bounds how long.

Resource handling: the caller owns the transport and calls :meth:`aclose` in a ``finally``;
it cancels the drain task, if any, and closes the socket.
"""

from __future__ import annotations

import email.utils
import http
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, Protocol

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import EXTERNAL_CLOSE_CODES, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CONNECTING, OPEN, SEND_EOF
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ._handshake import select_subprotocol
from ._output import Output
from ._transport import Transport

__all__ = ["MAX_HEAD_SIZE", "BadRequest", "WebSocketConnection", "http_answer", "text_frame"]

#: The longest HTTP request head read (request line and headers), in bytes.
MAX_HEAD_SIZE = 16 * 1024

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
#: A close frame's payload is at most 125 bytes: the code, then at most 123 of reason.
_MAX_REASON = 123

# websockets logs "connection open" / "connection closed" at INFO for every connection, which
# at the broker's default level would be two lines per client; its warnings and errors stay.
_PROTOCOL_LOGGER = logging.getLogger("strands_trio.broker.websockets")
_PROTOCOL_LOGGER.setLevel(logging.WARNING)

_pack = struct.pack


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame carrying *payload* (UTF-8): what a server sends (RFC 6455
    section 5.2). Three lines instead of ``websockets.frames.Frame(...).serialize()``, which
    costs 0.8 us against 0.25 us for a small message; ``tests/broker/test_websocket.py``
    checks both give the same bytes."""
    size = len(payload)
    if size < 126:
        return _pack("!BB", 0x81, size) + payload
    if size < 65536:
        return _pack("!BBH", 0x81, 126, size) + payload
    return _pack("!BBQ", 0x81, 127, size) + payload


def _subprotocol(offered: Sequence[Subprotocol], allowed: tuple[str, ...]) -> Subprotocol | None:
    name = select_subprotocol(offered, allowed)
    return None if name is None else Subprotocol(name)


class BadRequest(Exception):
    """What a peer sent is not an HTTP request the broker can read (it has been answered)."""


# ---------------------------------------------------------------------- the connection


class Outgoing(Protocol):
    """A message for one or many clients: its text, and its frame once made (by
    :meth:`WebSocketConnection.deliver` for the first client that needs it)."""

    text: str
    frame: bytes | None


class WebSocketConnection:
    """One accepted connection: an HTTP request, then possibly a WebSocket session.

    Args:
        transport: The connection's transport.
        drains: Where drain tasks run (they end with the output, or at :meth:`aclose`).
        max_message_size: The largest message accepted, in bytes (a larger one closes the
            connection with 1009).
        queue_bytes: Bytes of output held at most; beyond it a message closes the client
            with 1008 (a message alone in an empty output may be larger).
        pause_bytes: While more than this is held, :meth:`serve` does not read.
        compression: Offer permessage-deflate (a client that asks for it gets it).
        subprotocols: Subprotocols that may be selected, the client's first offered one
            winning (:func:`~._handshake.select_subprotocol`); none selected is no refusal.
    """

    __slots__ = (
        "_compressed",
        "_fragment_binary",
        "_fragments",
        "_output",
        "_pause_bytes",
        "_queue_bytes",
        "_read_scope",
        "_transport",
        "binary_messages",
        "dropped",
        "protocol",
    )

    def __init__(
        self,
        transport: Transport,
        drains: trio.Nursery,
        *,
        max_message_size: int,
        queue_bytes: int,
        pause_bytes: int,
        compression: bool = False,
        subprotocols: tuple[str, ...] = (),
    ) -> None:
        self._transport = transport
        self._output = Output(transport, drains)
        self.protocol = ServerProtocol(
            select_subprotocol=lambda _, offered: _subprotocol(offered, subprotocols),
            extensions=[ServerPerMessageDeflateFactory(server_max_window_bits=12,
                                                       compress_settings={"memLevel": 5})]
            if compression
            else None,
            max_size=max_message_size,
            logger=_PROTOCOL_LOGGER,
        )  # fmt: skip
        self._queue_bytes = queue_bytes
        self._pause_bytes = pause_bytes
        self._compressed = False
        self._fragments: list[bytes] | None = None
        self._fragment_binary = False
        self._read_scope: trio.CancelScope | None = None
        #: Binary messages received (passed on as text, undecodable bytes replaced).
        self.binary_messages = 0
        #: Messages dropped because the output was full (the client was closed with 1008).
        self.dropped = 0

    # ------------------------------------------------------------------ state

    @property
    def open(self) -> bool:
        """Whether the WebSocket is open: accepted, and no close frame sent or received."""
        return self.protocol.state is OPEN

    @property
    def output_bytes(self) -> int:
        """Bytes waiting to be written to the client."""
        return self._output.size

    @property
    def lost(self) -> int:
        """Frames never written: the connection broke or closed with them queued."""
        return self._output.lost

    # ------------------------------------------------------------------ before the upgrade

    async def read_request(self) -> Request | None:
        """Read the request head.

        Returns:
            The request, or ``None`` if the peer closed before sending a byte.

        Raises:
            BadRequest: the peer sent something that is not an HTTP/1 request head, one that
                is too long, or closed in the middle of it; the error answer (400, 414 or
                431) has been queued.
        """
        protocol = self.protocol
        received = 0
        while True:
            try:
                data = await self._transport.receive()
            except OSError as exc:  # reset, or not TLS on a TLS port
                raise BadRequest(f"the connection broke: {exc}") from exc
            if not data:
                protocol.receive_eof()
                if received:
                    self._refuse(400, "the request head is incomplete")
                return None
            received += len(data)
            protocol.receive_data(data)
            events = protocol.events_received()
            if events:
                request = events[0]
                assert isinstance(request, Request)
                if received - len(protocol.reader.buffer) > MAX_HEAD_SIZE:
                    self._refuse(431, "request head too long")
                return request
            if protocol.handshake_exc is not None:
                self._take_output()  # 414 or 431 from websockets, or only the end of stream
                if not self._output.queued:
                    cause = protocol.handshake_exc.__cause__ or protocol.handshake_exc
                    self._output.queue(protocol.reject(400, f"bad request: {cause}\n").serialize())
                self.flush()
                raise BadRequest(str(protocol.handshake_exc))
            if received > MAX_HEAD_SIZE:
                self._refuse(431, "request head too long")

    def _refuse(self, status: int, text: str) -> NoReturn:
        self._answer(self.protocol.reject(status, f"{text}\n"))
        raise BadRequest(text)

    def handshake_response(self, request: Request) -> Response:
        """websockets' answer to *request* as a WebSocket handshake: ``101`` if it can be
        upgraded (then send it with :meth:`accept` once admitted), else the error answer
        (400, 405, 426, 505, with the reason), already sent."""
        protocol = self.protocol
        response = protocol.accept(request)
        if response.status_code != 101:
            problem = protocol.handshake_exc
            if (
                isinstance(problem, InvalidHeaderValue) and problem.name == "Sec-WebSocket-Version"
            ):  # RFC 6455 4.2.2: say which version we speak (websockets answers a plain 400)
                response = protocol.reject(426, f"{response.body.decode()}")
                response.headers["Upgrade"] = "websocket"
            if response.status_code == 426:
                response.headers["Sec-WebSocket-Version"] = "13"
            self._answer(response)
        return response

    def accept(self, response: Response) -> None:
        """Send the ``101`` of :meth:`handshake_response`: the WebSocket is open."""
        self.protocol.send_response(response)
        self._compressed = bool(self.protocol.extensions)
        self._take_output()
        self.flush()

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer a plain HTTP request (or refuse a handshake) and end the connection."""
        self._answer(http_answer(status, body, content_type, headers))

    def _answer(self, response: Response) -> None:
        protocol = self.protocol
        if protocol.state is CONNECTING and not protocol.eof_sent:
            protocol.send_response(response)
            self._take_output()
        else:  # the parser gave up (it half-closed): the answer goes before the end
            self._output.queue(response.serialize())
            self._output.half_close()
        self.flush()

    # ------------------------------------------------------------------ the session

    async def serve(
        self,
        on_message: Callable[[str], bool],
        wait_ready: Callable[[], Any],
    ) -> None:
        """Read messages and pass each to *on_message* until the WebSocket is no longer open
        (either side closed it, it failed, or the client went away).

        Args:
            on_message: Called with each message (text; a binary message decoded as UTF-8
                with undecodable bytes replaced); returns whether to pause reading.
            wait_ready: Awaited after a message asked for a pause, before the next message
                (even one already read) is handed on.
        """
        protocol = self.protocol
        receive = self._transport.receive
        with trio.CancelScope() as self._read_scope:  # close() ends the session at once
            while protocol.state is OPEN:
                try:
                    data = await receive()
                except OSError:  # reset: the peer is gone, as at the end of the stream
                    data = b""
                if not data:
                    protocol.receive_eof()
                    self._take_output()
                    self.flush()
                    return
                protocol.receive_data(data)
                for frame in protocol.events_received():
                    opcode = frame.opcode  # type: ignore[union-attr]
                    if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
                        text = self._message(frame)
                        if text is None or protocol.state is not OPEN:
                            continue
                        # Flow control per message, not per read: a read may hold many.
                        if on_message(text):
                            self._take_output()
                            self.flush()
                            await wait_ready()
                        if self._output.size > self._pause_bytes:
                            self._take_output()
                            self.flush()
                            await self._output.wait_below(self._pause_bytes)
                self._take_output()
                self.flush()
        self._read_scope = None

    async def _receive(self) -> bytes:
        """The next bytes; ``b""`` at the end, a reset included (the peer is gone either
        way: the protocol then fails the connection with 1006)."""
        try:
            return await self._transport.receive()
        except OSError:
            return b""

    def _message(self, frame: Any) -> str | None:
        """A complete message's text once its last fragment is in, else ``None``."""
        if frame.opcode is _CONT:
            fragments = self._fragments
            assert fragments is not None  # the protocol refuses a stray continuation
            fragments.append(frame.data)
            if not frame.fin:
                return None
            self._fragments = None
            binary = self._fragment_binary
            data = b"".join(fragments)
        elif not frame.fin:  # a first fragment: its opcode stands for the whole message
            self._fragments = [frame.data]
            self._fragment_binary = frame.opcode is _BINARY
            return None
        else:
            binary = frame.opcode is _BINARY
            data = frame.data
        if binary:
            self.binary_messages += 1
            return data.decode("utf-8", errors="replace")
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            self.protocol.fail(1007, f"invalid UTF-8 at byte {exc.start} of a text message")
            return None

    def deliver(self, message: Outgoing) -> bool:
        """Queue *message* for the client, without writing yet (:meth:`flush` writes).

        Returns:
            ``True`` if it was queued; ``False`` if the WebSocket is not open, or if the
            output is full: then the client is closed with 1008 ("too slow") and what it
            had not been sent yet is dropped (counted in :attr:`dropped`).
        """
        if self.protocol.state is not OPEN:
            return False
        if self._compressed:
            self.protocol.send_text(message.text.encode())
            data = b"".join(self.protocol.data_to_send())
        else:
            frame = message.frame
            if frame is None:  # the first member of a room to get it frames it for all
                frame = message.frame = text_frame(message.text.encode())
            data = frame
        output = self._output
        if output.size + len(data) > self._queue_bytes and output.size:
            self.dropped += 1 + output.drop_queued()
            self.close(1008, "too slow: message queue full")
            return False
        output.queue(data)
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with *code* and *reason*, after what is queued; the
        session then ends (:meth:`serve` returns at once; :meth:`finish` waits for the
        client's answer). Does nothing if it is not open."""
        protocol = self.protocol
        if protocol.state is OPEN:
            if not (code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000):
                code = 1000  # a backend's code that no endpoint may send
            reason = reason.encode()[:_MAX_REASON].decode(errors="ignore")
            protocol.send_close(code, reason)
            self._take_output()
            self.flush()
            if self._read_scope is not None:
                self._read_scope.cancel()

    # ------------------------------------------------------------------ writing

    def _take_output(self) -> None:
        output = self._output
        for data in self.protocol.data_to_send():
            if data is SEND_EOF or not data:
                output.half_close()
            else:
                output.queue(data)

    def flush(self) -> None:
        """Write what is queued, now if the socket takes it, else from a drain task."""
        self._output.flush()

    # ------------------------------------------------------------------ the end

    async def finish(self) -> None:
        """After the session (or an HTTP answer): write what is queued, half-close, and read
        (discarding) until the client closes its side. Unbounded: the caller sets the
        deadline, then calls :meth:`aclose`."""
        protocol = self.protocol
        self._take_output()
        self.flush()
        receive = self._receive
        while protocol.state is not CLOSED and not self._output.broken:
            data = await receive()
            if not data:
                protocol.receive_eof()
                break
            protocol.receive_data(data)
            protocol.events_received()
            self._take_output()
            self.flush()
        self._take_output()
        self.flush()
        await self._output.wait_below(0)

    async def aclose(self) -> None:
        """Close the connection at once (cancelling the drain task, if any)."""
        self._output.close()
        await self._transport.aclose()


def http_answer(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """An HTTP answer that ends its connection (``Connection: close``)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    fields = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        *headers,
    ]
    return Response(status, phrase, Headers(fields), body)
