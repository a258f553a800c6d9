"""Testing a backend with pytest-trio and the in-memory FakeBroker."""

import pytest

from strands_trio.testing import ConnectionRejected, open_fake_broker

from .echo_client import ChatBackend


async def test_echo() -> None:
    async with (
        open_fake_broker() as broker,
        ChatBackend(connect=broker.open_backend_stream).connected(),
    ):
        with pytest.raises(ConnectionRejected):
            await broker.connect("/ws/lobby", headers={"Authorization": "Bearer wrong"})
        alice = await broker.connect("/ws/lobby", headers={"Authorization": "Bearer valid-token"})
        await alice.send("hello")
        assert await alice.receive() == "echo: hello"
        assert broker.room_messages("lobby") == ["echo: hello"]
