"""The rooms chat example against FakeBroker: as strands-trio's broker (joins work) and as the
reference broker (they are refused, and the app says so)."""

import json

import trio

from strands_trio.testing import open_fake_broker

from .rooms_chat import app


def say(kind: str, **fields: str) -> str:
    return json.dumps({"type": kind, **fields})


async def test_rooms_chat_on_our_broker() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=False) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann = await broker.connect("/ws/ann")
            bob = await broker.connect("/ws/games")
            await ann.send(say("join", room="games"))
            assert (await ann.receive()).endswith("joined, 2 here")
            assert (await bob.receive()).endswith("joined, 2 here")
            await bob.send(say("say", room="games", text="hi"))
            assert (await ann.receive()).endswith(": hi")
            assert (await bob.receive()).endswith(": hi")
            await ann.send(say("leave", room="games"))
            await bob.send(say("say", room="games", text="gone?"))
            assert (await bob.receive()).endswith(": gone?")
            await ann.send(say("say", room="ann", text="alone"))
            assert (await ann.receive()).endswith(": alone")  # not "gone?" first


async def test_rooms_chat_on_the_reference_broker() -> None:
    with trio.fail_after(5):
        async with (
            open_fake_broker(reference=True) as broker,
            app.connected(connect=broker.open_backend_stream),
        ):
            ann = await broker.connect("/ws/ann")
            await ann.send(say("say", room="ann", text="first"))  # the link is known by now
            assert (await ann.receive()).endswith(": first")
            await ann.send(say("join", room="games"))
            assert await ann.receive() == "joining rooms is not available"
