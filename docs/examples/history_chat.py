"""A chat backend whose room messages survive a reconnection: ``chat.said`` messages are kept
with offsets, and a page on ``strands.js`` that reconnects gets what it missed."""

import attrs
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import History, MemoryHistory, RedisHistory
from strands_trio.redis import serve_live_redis


@attrs.frozen
class Say:
    text: str


@attrs.frozen
class Said:
    user: str
    text: str


def make_app(history: History) -> StrandsApp:
    app = StrandsApp(middleware=[history])  # it answers strands.recover itself
    app.outgoing("chat.said")(Said)

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
        return True

    @app.on_message("chat.say", model=Say)
    async def say(payload: Say, context: Context) -> None:
        said = Said(user=context.client_id, text=payload.text)
        # Through the history: kept with the room's next offset, sent with room/offset/epoch.
        await history.send_room_message(app, context.room_id, said)

    return app


# One backend: the last 100 messages of each room, for 5 minutes.
history = History(store=MemoryHistory(size=100, max_age=300), types={"chat.said"})
app = make_app(history)


async def serve_replica(redis_url: str, broker_port: int) -> None:
    """One of several replicas sharing their rooms' history in Redis."""
    async with trio.open_nursery() as nursery:
        live = await nursery.start(serve_live_redis, redis_url)
        store = RedisHistory(live, size=100, max_age=300)
        replica = make_app(History(store=store, types={"chat.said"}))
        await replica.serve("127.0.0.1", broker_port)
