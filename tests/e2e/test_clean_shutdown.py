"""A clean shutdown warns about nothing: a broker and its backend stopped together (as the demo
and a deployment's Ctrl-C do) while clients are connected log no WARNING, though what the
backend left unread is still counted."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio

from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker

from .._net import open_client


async def test_broker_and_backend_stopped_together_warn_about_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Clients stay connected (outside the stopped scope) while the broker and the backend
    stop; the broker's disconnections it could not deliver are logged at INFO and counted."""
    from docs.examples.chat_app import app

    caplog.set_level(logging.INFO, "strands_trio")
    # shutdown_timeout=1: the test's clients keep their TCP connections open after the
    # closing handshake (a browser closes its own), so the broker waits out its deadline.
    config = BrokerConfig(
        ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None, shutdown_timeout=1
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as servers:
                broker: BrokerAddress = await servers.start(serve_broker, config)
                await servers.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
                for _ in range(3):
                    ws = await open_client(
                        clients,
                        broker.ws_port,
                        "/ws/lobby",
                        [("Authorization", "Bearer valid-token")],
                    )
                    await ws.send_message("hi")
                    assert await ws.get_message() == "echo: hi"
                servers.cancel_scope.cancel()
            clients.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    stops = [r for r in caplog.records if "while the broker was stopping" in r.getMessage()]
    assert all(r.levelno == logging.INFO for r in stops)
    assert broker.statistics().backends.events_lost == sum(
        int(r.getMessage().split()[0]) for r in stops
    )
