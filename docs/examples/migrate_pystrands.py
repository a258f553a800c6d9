"""The chat backend of docs/migration.md, written for the asyncio ``pystrands`` client (1.0.0).

It admits a client whose token (``Authorization: Bearer <token>``, else ``?token=<token>``) is
known, puts it in the room named by its path (``/ws/<room>``), greets it, tells the room who
joined and left, echoes messages to the room and broadcasts ``/all <text>`` to everyone.
docs/examples/migrate_trio.py is the same backend in strands-trio; tests/e2e/test_migration.py
runs both against strands-trio's broker and checks that they behave the same.
"""

import asyncio
from urllib.parse import parse_qs, urlsplit

from pystrands import AsyncPyStrandsClient

TOKENS = {"t-ann": "ann", "t-bob": "bob", "t-cat": "cat"}  # token -> user name


def token_of(request):
    """The token from "Authorization: Bearer <token>", else from "?token=<token>", else ""."""
    scheme, _, token = request.headers.get("Authorization", [""])[0].partition(" ")
    if scheme == "Bearer" and token:
        return token
    return parse_qs(urlsplit(request.url).query).get("token", [""])[0]


def name_of(context):
    # The reference broker nests the metadata in a copy of its whole response (strands-trio's
    # broker does not): {"accepted": ..., "client_id": ..., "metadata": {"name": ...}, ...}.
    metadata = context.metadata
    return metadata.get("metadata", metadata)["name"]


class Chat(AsyncPyStrandsClient):
    async def on_connection_request(self, request):
        user = TOKENS.get(token_of(request))
        if user is None:
            return False  # reject: the WebSocket handshake is refused
        request.context.room_id = urlsplit(request.url).path.removeprefix("/ws/")
        request.context.metadata = {"name": user}
        return True  # accept

    async def on_new_connection(self, context):
        name = name_of(context)
        await self.send_private_message(context.client_id, f"welcome to {context.room_id}, {name}")
        await self.send_room_message(context.room_id, f"{name} joined")

    async def on_message(self, message, context):
        name = name_of(context)
        if message.startswith("/all "):
            await self.broadcast_message(f"{name} to all: {message.removeprefix('/all ')}")
        else:
            await self.send_room_message(context.room_id, f"{name}: {message}")

    async def on_disconnect(self, context):
        await self.send_room_message(context.room_id, f"{name_of(context)} left")


async def main(host="localhost", port=8081):
    chat = Chat(host, port)
    await chat.run_forever()  # connects; until cancelled (Ctrl-C), then disconnect()


if __name__ == "__main__":
    asyncio.run(main())
