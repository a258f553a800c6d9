"""The embedded broker example, with a real WebSocket client on loopback."""

import trio
from trio_websocket import open_websocket

from .embedded_broker import main


async def test_embedded_broker() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(main, 0)
            async with open_websocket("127.0.0.1", port, "/ws/lobby", use_ssl=False) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "echo: hi"
            nursery.cancel_scope.cancel()
