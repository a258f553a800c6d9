"""The chat backend of docs/migration.md in strands-trio: docs/examples/migrate_pystrands.py
ported, line for line where it can be.

Run it next to a broker (``strands-trio broker``) with ``strands-trio run migrate_trio:Chat``
from this folder, or embed it in a Trio program as :func:`main` does. :func:`with_middleware`
is the page's next step: the token check and a rate limit as middleware.
"""

from urllib.parse import parse_qs, urlsplit

import trio

from strands_trio import ConnectionRequestContext, Context, StrandsClient
from strands_trio.middleware import (
    APIKeyVerifier,
    Auth,
    Rate,
    RateLimit,
    first_of,
    from_header,
    from_query,
)

TOKENS = {"t-ann": "ann", "t-bob": "bob", "t-cat": "cat"}  # token -> user name


def token_of(request: ConnectionRequestContext) -> str:
    """The token from "Authorization: Bearer <token>", else from "?token=<token>", else ""."""
    scheme, _, token = (request.header("Authorization") or "").partition(" ")
    if scheme == "Bearer" and token:
        return token
    return parse_qs(urlsplit(request.url).query).get("token", [""])[0]


class Chat(StrandsClient):
    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        user = TOKENS.get(token_of(request))
        if user is None:
            return False  # reject: the WebSocket handshake is refused
        request.context.room_id = urlsplit(request.url).path.removeprefix("/ws/")
        request.context.metadata = {"name": user}
        return True  # accept

    async def on_new_connection(self, context: Context) -> None:
        name = context.metadata["name"]  # what on_connection_request set, whatever the broker
        await self.send_private_message(context.client_id, f"welcome to {context.room_id}, {name}")
        await self.send_room_message(context.room_id, f"{name} joined")

    async def on_message(self, message: str, context: Context) -> None:
        name = context.metadata["name"]
        if message.startswith("/all "):
            await self.broadcast_message(f"{name} to all: {message.removeprefix('/all ')}")
        else:
            await self.send_room_message(context.room_id, f"{name}: {message}")

    async def on_disconnect(self, context: Context) -> None:
        await self.send_room_message(context.room_id, f"{context.metadata['name']} left")


async def main(host: str = "localhost", port: int = 8081) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(Chat(host, port).run)  # returns once connected
        # ... start the rest of your program here; cancelling the nursery stops it all


def with_middleware(host: str = "localhost", port: int = 8081) -> Chat:
    token = first_of(from_header("Authorization", "Bearer"), from_query("token"))  # token_of
    return Chat(
        host,
        port,
        middleware=[
            Auth(verifier=APIKeyVerifier(keys=TOKENS), source=token),  # before the callback
            RateLimit(messages=Rate(burst=5, per_second=1)),  # per client; then an error frame
        ],
    )


if __name__ == "__main__":
    trio.run(main)  # or, without this block: strands-trio run migrate_trio:Chat
