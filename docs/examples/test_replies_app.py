"""The replies example, end to end against the in-memory broker: calls answered with the
handler's return value, a message without a ref answered with nothing."""

import json

import trio
import trio.testing

from strands_trio.testing import open_fake_broker

from .replies_app import app


async def test_replies_app(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_fake_broker() as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        ann = await broker.connect("/ws/lobby")
        await ann.send(json.dumps({"type": "chat.older", "ref": 1, "before": 3}))
        assert json.loads(await ann.receive()) == {
            "type": "reply",
            "ref": 1,
            "data": {"lines": ["line 1", "line 2", "line 3"], "more": False},
        }
        await ann.send(json.dumps({"type": "chat.older", "before": 3}))  # no ref: no reply
        await ann.send(json.dumps({"type": "chat.search", "ref": "s", "text": "line 10"}))
        reply = json.loads(await ann.receive())
        assert (reply["ref"], reply["data"]) == ("s", ["line 10", "line 100"])
        await ann.send(json.dumps({"type": "chat.older", "ref": 2}))
        error = json.loads(await ann.receive())
        assert (error["type"], error["ref"], error["code"]) == ("error", 2, "invalid_message")
