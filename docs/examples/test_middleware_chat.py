"""The middleware chat example, end to end against the in-memory broker."""

import json
import time

import jwt
import pytest

from strands_trio.testing import ConnectionRejected, open_fake_broker

from .middleware_chat import SECRET, app


def token(user: str, *roles: str) -> str:
    claims = {"sub": user, "aud": "chat", "exp": int(time.time()) + 60, "roles": list(roles)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_middleware_chat() -> None:
    # from_query needs a broker that passes the query string on (--pass-query-string).
    async with (
        open_fake_broker(pass_query_string=True) as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        with pytest.raises(ConnectionRejected):  # no token
            await broker.connect("/ws/lobby")
        ann = await broker.connect(f"/ws/lobby?token={token('ann', 'member')}")
        root = await broker.connect(f"/ws/lobby?token={token('root', 'admin')}")

        await ann.send(json.dumps({"type": "chat.say", "text": "hi"}))
        assert await root.receive() == "ann: hi"
        assert await ann.receive() == "ann: hi"

        await ann.send(json.dumps({"type": "chat.kick", "client_id": root.client_id}))
        assert json.loads(await ann.receive())["code"] == "forbidden"  # ann is no admin

        await ann.send(json.dumps({"type": "chat.say"}))  # no text
        error = json.loads(await ann.receive())
        assert error["code"] == "invalid_message"
        assert "$.text" in error["reason"]

        for _ in range(5):  # 3 of the burst of 5 are spent: some of these are refused
            await ann.send(json.dumps({"type": "chat.say", "text": "spam"}))
        replies = [await ann.receive() for _ in range(5)]
        assert '{"type":"error","code":"rate_limited"' in replies[-1]
