"""WebSocket echo servers for ``benchmarks/websocket.py`` and ``benchmarks/broker.py``, each run
in its own process:

    python benchmarks/_servers.py KIND

Binds 127.0.0.1 on a free port, prints the port on stdout, then echoes every text and binary
message back to its sender until killed. Kinds (:data:`KINDS`):

- ``trio-websocket``: ``trio_websocket.serve_websocket`` with its defaults (the wsproto core;
  ``benchmarks/broker.py``'s ``ws-echo`` row);
- ``websockets-trio``: websockets' own Trio server (``websockets.trio.server.serve``), with
  compression off (the load generator offers it only with ``--deflate``);
- ``sansio``: a minimal Trio adapter over websockets' sans-IO ``ServerProtocol``, one task per
  connection and nothing else: the least a Trio server built on that core can cost;
- ``adapter``: the broker's own adapter (``strands_trio.broker._connection``), driven exactly
  as the broker's WebSocket front drives it (a detached socket in a ``SocketTransport``,
  ``read_request``, ``handshake_response``, ``accept``, ``serve``, ``finish``), each message
  echoed with ``deliver`` and ``flush``: no hub, no backend, the ceiling the broker is
  measured against (``benchmarks/broker.py``);
- ``adapter-deflate``: the same with permessage-deflate offered (``compression=True``), for
  clients that ask for it (``_wsload.py pingpong --deflate``).
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from _common import HOST

MAX_SIZE = 2**20  # bytes per message, as trio-websocket's and websockets' default
RECEIVE_SIZE = 65536
CLOSE_TIMEOUT = 1.0  # seconds a closing connection may take to see the peer's EOF

#: ``serve(task_status=...)``: listens, reports the bound port through ``task_status``, then
#: serves until cancelled.
Serve = Callable[..., Awaitable[None]]


# ---------------------------------------------------------------------- trio-websocket


async def serve_trio_websocket(*, task_status: trio.TaskStatus[int]) -> None:
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, echo, HOST, 0, None))
        task_status.started(server.port)


# ---------------------------------------------------------------------- websockets-trio


async def serve_websockets_trio(*, task_status: trio.TaskStatus[int]) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        serving = partial(serve, echo, 0, host=HOST, compression=None, max_size=MAX_SIZE)
        server = await nursery.start(serving)
        task_status.started(server.listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------- sansio


async def sansio_connection(stream: trio.SocketStream) -> None:
    """Serve one connection: websockets' sans-IO core, driven by the bytes *stream* gives."""
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    protocol = ServerProtocol(max_size=MAX_SIZE)
    echo: dict[Opcode, Callable[..., None]] = {
        Opcode.TEXT: protocol.send_text,
        Opcode.BINARY: protocol.send_binary,
        Opcode.CONT: protocol.send_continuation,
    }
    try:
        with trio.CancelScope() as scope:
            while protocol.state is not State.CLOSED:
                data = await stream.receive_some(RECEIVE_SIZE)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for event in protocol.events_received():  # pings and closes: the core answers
                    if isinstance(event, Request):
                        protocol.send_response(protocol.accept(event))
                    elif protocol.state is not State.OPEN:
                        break  # closing (the batch had a close): the rest is not echoed
                    elif isinstance(event, Frame) and event.opcode in echo:
                        echo[event.opcode](event.data, fin=event.fin)
                writes = protocol.data_to_send()
                if out := b"".join(writes):
                    await stream.send_all(out)
                if writes and not writes[-1]:  # SEND_EOF: half-close, then await the peer's
                    await stream.send_eof()
                if protocol.close_expected() and math.isinf(scope.deadline):
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve_sansio(*, task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(sansio_connection, listeners)


# ---------------------------------------------------------------------- adapter

ADAPTER_QUEUE_BYTES = 4 << 20  # the broker's default client_queue_bytes
ADAPTER_PAUSE_BYTES = 512 << 10  # and its pause threshold (an eighth of it)


async def adapter_connection(
    drains: trio.Nursery, compression: bool, stream: trio.SocketStream
) -> None:
    """Serve one connection as ``strands_trio.broker._front.WebSocketFront._handle`` does,
    with an echo in place of the hub."""
    from strands_trio.broker import Delivery
    from strands_trio.broker._connection import BadRequest, WebSocketConnection
    from strands_trio.broker._transport import SocketTransport

    transport = SocketTransport(socket.socket(fileno=stream.socket.detach()))
    conn = WebSocketConnection(
        transport,
        drains,
        max_message_size=MAX_SIZE,
        queue_bytes=ADAPTER_QUEUE_BYTES,
        pause_bytes=ADAPTER_PAUSE_BYTES,
        compression=compression,
    )

    def on_message(text: str) -> bool:
        conn.deliver(Delivery(text))
        conn.flush()
        return False  # never pause: there is no backend to wait for

    try:
        try:
            request = await conn.read_request()
        except BadRequest:  # answered already (400, 414 or 431)
            request = None
        if request is not None:
            response = conn.handshake_response(request)  # answered already if not 101
            if response.status_code == 101:
                conn.accept(response)
                await conn.serve(on_message, trio.lowlevel.checkpoint)
        with trio.move_on_after(CLOSE_TIMEOUT):
            await conn.finish()
    finally:
        await conn.aclose()


async def serve_adapter(*, task_status: trio.TaskStatus[int], compression: bool = False) -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    async with trio.open_nursery() as drains:  # write-behind tasks of slow clients
        handler = partial(adapter_connection, drains, compression)
        await drains.start(partial(trio.serve_listeners, handler, listeners))
        task_status.started(listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------- kinds

KINDS: dict[str, Serve] = {
    "trio-websocket": serve_trio_websocket,
    "websockets-trio": serve_websockets_trio,
    "sansio": serve_sansio,
    "adapter": serve_adapter,
    "adapter-deflate": partial(serve_adapter, compression=True),
}
#: The kinds whose clients should offer permessage-deflate.
DEFLATE_KINDS = frozenset({"adapter-deflate"})


async def serve(kind: str) -> None:
    """Serve *kind* until cancelled, once its port is printed on stdout."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(KINDS[kind])
        print(port, flush=True)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(KINDS)}}}")
    trio.run(serve, sys.argv[1])


if __name__ == "__main__":
    main()
