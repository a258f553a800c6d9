"""The history chat example against the in-memory broker in the reference broker's mode: a
client that asks to recover from an offset gets the messages after it, then the answer."""

import json

import trio

from strands_trio.testing import open_fake_broker

from .history_chat import app


async def test_history_chat_replays_what_was_missed() -> None:
    """Two messages said; a recover from offset 1 replays the second, then answers."""
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=True) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann = await broker.connect("/ws/lobby")
            for text in ("hello", "again"):
                await ann.send(json.dumps({"type": "chat.say", "text": text}))
            first, second = json.loads(await ann.receive()), json.loads(await ann.receive())
            assert (first["text"], first["room"], first["offset"]) == ("hello", "lobby", 1)
            ask = {"lobby": {"epoch": first["epoch"], "offset": 1}}
            await ann.send(json.dumps({"type": "strands.recover", "rooms": ask}))
            assert json.loads(await ann.receive()) == second
            answer = json.loads(await ann.receive())
            assert answer["rooms"]["lobby"]["recovered"] is True
