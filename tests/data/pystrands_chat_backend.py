"""A chat backend written for the reference broker with the asyncio pystrands client from
PyPI, run in a subprocess by tests/e2e/test_broker.py: ``python this.py PORT``.

It admits "Bearer good" into the room named by the path, echoes messages to the room, sends
"private:<id>:<text>" to one client and "all:<text>" to everyone.
"""

import asyncio
import sys

from pystrands import AsyncPyStrandsClient


class Chat(AsyncPyStrandsClient):
    async def on_connection_request(self, request):
        if request.headers.get("Authorization") != ["Bearer good"]:
            return False
        request.context.room_id = request.url.removeprefix("/ws/")
        request.context.metadata = {"name": request.headers.get("X-Name", ["?"])[0]}
        return True

    async def on_new_connection(self, context):
        await self.send_room_message(context.room_id, f"joined {context.metadata['name']}")

    async def on_message(self, message, context):
        if message.startswith("private:"):
            _, client_id, text = message.split(":", 2)
            await self.send_private_message(client_id, text)
        elif message.startswith("all:"):
            await self.broadcast_message(message[4:])
        else:
            await self.send_room_message(context.room_id, f"{context.metadata['name']}: {message}")

    async def on_disconnect(self, context):
        await self.send_room_message(context.room_id, f"left {context.metadata['name']}")


async def main(port):
    client = Chat(host="127.0.0.1", port=port, auto_reconnect=False)
    await client.connect()
    await client.run_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
