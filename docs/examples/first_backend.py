"""The quickstart's first backend: a token a browser can send, checked by the Auth middleware,
a room from the path, and every message echoed to the room with its sender's name."""

import trio

from strands_trio import ConnectionRequestContext, Context, StrandsClient
from strands_trio.middleware import IDENTITY, APIKeyVerifier, Auth, from_query

# A browser cannot set an Authorization header on a WebSocket, so its token comes in the
# query string: ws://localhost:8080/ws/lobby?token=key-of-ann
auth = Auth(
    verifier=APIKeyVerifier(keys={"key-of-ann": "ann", "key-of-bob": "bob"}),
    source=from_query("token"),
)


class ChatBackend(StrandsClient):
    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        # Auth has refused a request without a valid token before this runs.
        request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
        return True  # accept

    async def on_message(self, message: str, context: Context) -> None:
        user = IDENTITY.get(context)  # who Auth said this client is
        name = user.subject if user else "?"
        await self.send_room_message(context.room_id, f"{name}: {message}")

    async def on_disconnect(self, context: Context) -> None:
        print(f"{context.client_id} left {context.room_id}")


if __name__ == "__main__":
    trio.run(ChatBackend("localhost", 8081, middleware=[auth]).run)
