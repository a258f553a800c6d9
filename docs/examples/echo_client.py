"""A backend in the asyncio peer's style: subclass StrandsClient, override callbacks."""

import trio

from strands_trio import ConnectionRequestContext, Context, StrandsClient


class ChatBackend(StrandsClient):
    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        # Auth: check headers, assign room, set metadata.
        if request.header("Authorization") != "Bearer valid-token":
            return False  # reject
        request.context.room_id = request.url.removeprefix("/ws/")
        request.context.metadata = {"role": "user"}
        return True  # accept

    async def on_message(self, message: str, context: Context) -> None:
        # context.metadata is what on_connection_request set, whatever the broker.
        await self.send_room_message(context.room_id, f"echo: {message}")

    async def on_disconnect(self, context: Context) -> None:
        print(f"{context.client_id} left {context.room_id}")


if __name__ == "__main__":
    trio.run(ChatBackend("localhost", 8081).run)
