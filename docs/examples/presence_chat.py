"""A chat backend that knows who is in each room: the presence middleware, in memory for one
backend process, or in Redis for replicas that share one view."""

from collections.abc import Awaitable, Callable
from functools import partial

import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import Presence, PresenceUnavailable, RedisPresence, by_metadata
from strands_trio.redis import serve_live_redis


def make_app(presence: Presence) -> StrandsApp:
    """The chat, around the presence middleware it is given."""
    app = StrandsApp(middleware=[presence])

    @app.on_connection_request
    async def place(request: ConnectionRequestContext) -> bool:
        name = request.header("X-User")
        request.context.room_id = request.url.removeprefix("/ws/") or "lobby"
        request.context.metadata = {"name": name}
        return bool(name)

    @app.on_new_connection
    async def joined(context: Context) -> None:
        members = await presence.members(context.room_id)  # the newcomer is already in
        names = ", ".join(member.fields["name"] for member in members)
        await app.send_private_message(context.client_id, f"here: {names}")

    @app.on_message
    async def chat(message: str, context: Context) -> None:
        if message != "/who":
            await app.send_room_message(context.room_id, f"{context.metadata['name']}: {message}")
            return
        try:
            count = await presence.count(context.room_id)
        except PresenceUnavailable:  # Redis is down: say so rather than guess
            await app.send_private_message(context.client_id, "who is here is unknown")
            return
        await app.send_private_message(context.client_id, f"{count} here")

    @app.on_disconnect
    async def left(context: Context) -> None:
        count = await presence.count(context.room_id)  # the leaver is already out
        name = context.metadata["name"]
        await app.send_room_message(context.room_id, f"{name} left, {count} here")

    return app


#: One backend process: members in its memory.
app = make_app(Presence(fields={"name": by_metadata("name")}))


async def serve_replica(
    redis_url: str,
    broker_host: str = "localhost",
    broker_port: int = 8081,
    *,
    connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,  # tests: in memory
    task_status: trio.TaskStatus[RedisPresence] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One of several replicas sharing presence in Redis: the connection, the store's task
    and the app, in one nursery; cancelling it stops all three."""
    async with trio.open_nursery() as nursery:
        live = await nursery.start(serve_live_redis, redis_url)
        store = RedisPresence(live, ttl=30.0)  # a dead replica's members go within 30 s
        await nursery.start(store.serve)
        presence = Presence(store=store, fields={"name": by_metadata("name")})
        replica = make_app(presence)
        await nursery.start(partial(replica.serve, broker_host, broker_port, connect=connect))
        task_status.started(store)


if __name__ == "__main__":
    trio.run(serve_replica, "redis://localhost:6379")
