"""How a WebSocket connection moves bytes: a plain socket driven with ``trio.lowlevel``, or
any Trio stream (TLS).

Theory of operation. A :class:`Transport` reads with ``await receive()`` and writes in two
ways: ``send_nowait`` writes what the kernel takes at once, from whichever task has something
to send and without a checkpoint, and ``send_all`` waits for the rest. :class:`SocketTransport`
owns a non-blocking stdlib socket (detached from the ``trio.SocketStream`` the listener made),
so its writes that fit in the kernel's buffer cost one system call and no task switch;
:class:`StreamTransport` wraps a Trio stream (``trio.SSLStream`` for ``wss://``), which cannot
write without waiting, so ``send_nowait`` writes nothing and every write goes through
``send_all`` in a task.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Protocol

import trio

__all__ = ["RECEIVE_SIZE", "SocketTransport", "StreamTransport", "Transport"]

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536


class Transport(Protocol):
    """How a connection moves bytes: a plain socket, or a Trio stream (TLS)."""

    async def receive(self) -> bytes:
        """The next bytes from the peer; ``b""`` at its end.

        Raises:
            OSError: the connection broke (reset, or a failed TLS handshake).
        """
        ...

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what can be written without waiting; the number of bytes written.

        Raises:
            OSError: the connection is broken.
        """
        ...

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of *data*, waiting as needed.

        Raises:
            OSError: the connection is broken.
        """
        ...

    def shutdown_write(self) -> None:
        """Half-close: send the end of the stream (where the transport has one)."""
        ...

    async def aclose(self) -> None:
        """Close at once."""
        ...


class SocketTransport:
    """A connected socket in non-blocking mode, waited on with ``trio.lowlevel``: writes that
    fit in the kernel's buffer happen at once, from whichever task has something to send.

    Args:
        sock: The socket (made non-blocking here).
    """

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def receive(self) -> bytes:
        """The next bytes from the peer; ``b""`` at its end.

        Raises:
            OSError: the connection broke (reset by the peer).
        """
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(RECEIVE_SIZE)
            except BlockingIOError:  # woken spuriously
                continue

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what fits in the socket's buffer; the number of bytes written."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of *data*, waiting for the socket to be writable as needed."""
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            view = view[self.send_nowait(view) :]

    def shutdown_write(self) -> None:
        """Send FIN (ignored if the connection is already broken)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        """Close the socket, waking any task waiting on it."""
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
        await trio.lowlevel.checkpoint()


class StreamTransport:
    """Any Trio stream (``trio.SSLStream`` for ``wss://``); it cannot write without waiting,
    so every write goes through the connection's drain task.

    Args:
        stream: The stream.
    """

    __slots__ = ("stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        """The next bytes from the peer; ``b""`` at its end.

        Raises:
            OSError: the connection broke (reset, or a failed TLS handshake).
        """
        try:
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc) or type(exc).__name__) from exc

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Nothing can be written without waiting: 0."""
        return 0

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of *data*."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(str(exc)) from exc

    def shutdown_write(self) -> None:
        """TLS has no half-close here: nothing to do."""

    async def aclose(self) -> None:
        """Close the stream at once."""
        await trio.aclose_forcefully(self.stream)
