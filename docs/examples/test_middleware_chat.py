"""The middleware chat example, end to end against the in-memory broker."""

import json
import time

import jwt
import pytest

from strands_trio.testing import ConnectionRejected, open_fake_broker

from .middleware_chat import SECRET, app, presence


def token(user: str, *roles: str) -> str:
    claims = {"sub": user, "aud": "chat", "exp": int(time.time()) + 60, "roles": list(roles)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_middleware_chat() -> None:
    # from_query reads the query field our broker sends (reference=False: as strands-trio's).
    async with (
        open_fake_broker(reference=False) as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        with pytest.raises(ConnectionRejected):  # no token
            await broker.connect("/ws/lobby")
        ann = await broker.connect(f"/ws/lobby?token={token('ann', 'member')}")
        root = await broker.connect(f"/ws/lobby?token={token('root', 'admin')}")
        assert (ann.room_id, root.room_id) == ("lobby", "lobby")  # the path, never the token

        await ann.send(json.dumps({"type": "chat.say", "text": "hi"}))
        assert await root.receive() == "ann: hi"
        assert await ann.receive() == "ann: hi"
        await root.send(json.dumps({"type": "chat.say", "text": "hello"}))
        assert await ann.receive() == "root: hello"
        assert await root.receive() == "root: hello"
        # Each client's events run in order: both new_connection events went through Presence.
        members = await presence.members("lobby")
        assert [member.fields["name"] for member in members] == ["ann", "root"]  # from the JWT

        await ann.send(json.dumps({"type": "chat.kick", "client_id": root.client_id}))
        assert json.loads(await ann.receive())["code"] == "forbidden"  # ann is no admin
        await root.send(json.dumps({"type": "chat.kick", "client_id": ann.client_id}))
        assert await ann.receive() == "you were kicked"  # root's JWT has "roles": ["admin"]

        await ann.send(json.dumps({"type": "chat.say"}))  # no text
        error = json.loads(await ann.receive())
        assert error["code"] == "invalid_message"
        assert "$.text" in error["reason"]

        for _ in range(5):  # 3 of the burst of 5 are spent: some of these are refused
            await ann.send(json.dumps({"type": "chat.say", "text": "spam"}))
        replies = [await ann.receive() for _ in range(5)]
        assert '{"type":"error","code":"rate_limited"' in replies[-1]
