"""The concepts page's examples: a deadline around start, stopping by cancellation, and a
single attempt without reconnection, against real loopback ports."""

import socket

import trio
import trio.testing

from strands_trio.broker import BrokerConfig, serve_broker

from .concepts import app, serve_for, start_or_give_up, try_once


def closed_port() -> int:
    """A loopback port that nothing listens on (it was just bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_start_gives_up_after_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """With no broker, start keeps retrying until the caller's deadline, then leaves nothing
    running."""
    async with trio.open_nursery() as nursery:
        assert not await start_or_give_up(nursery, "127.0.0.1", closed_port())
    assert trio.current_time() == 5


async def test_start_returns_once_connected() -> None:
    """With a broker, start returns as soon as the backend is connected."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            broker = await nursery.start(serve_broker, BrokerConfig(ws_port=0, tcp_port=0))
            assert await start_or_give_up(nursery, "127.0.0.1", broker.tcp_port)
            assert app.statistics().connected
            await broker.hub.wait_backends(1)
            nursery.cancel_scope.cancel()


async def test_serve_for_stops_cleanly() -> None:
    """Cancelling the scope around serve() stops the backend, and the broker sees it leave."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            broker = await nursery.start(serve_broker, BrokerConfig(ws_port=0, tcp_port=0))
            await serve_for(0.2, "127.0.0.1", broker.tcp_port)
            await broker.hub.wait_backends(0)
            assert broker.statistics().hub.backends == 0
            nursery.cancel_scope.cancel()


async def test_try_once_reports_a_refused_connection() -> None:
    """Without reconnection, a refused connection comes out as BrokerConnectionError."""
    with trio.fail_after(10):
        result = await try_once("127.0.0.1", closed_port())
    assert result.startswith("no broker: ")
