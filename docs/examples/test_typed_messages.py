"""The typed messages example, end to end against the in-memory broker."""

import json

from strands_trio.testing import open_fake_broker

from .typed_messages import app


async def test_typed_messages() -> None:
    async with (
        open_fake_broker() as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        ann = await broker.connect("/ws/lobby")
        await ann.send(json.dumps({"type": "chat.say", "text": "hi"}))
        said = json.loads(await ann.receive())
        assert said == {"type": "chat.said", "name": ann.client_id, "text": "hi"}
