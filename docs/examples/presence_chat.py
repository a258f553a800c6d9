"""A chat backend that knows who is in each room: the presence middleware, in memory for one
backend process, or in Redis for replicas that share one view. A member's name is the
identity that Auth verified from a token a browser can send (``/ws/lobby?token=t-ann``)."""

from collections.abc import Awaitable, Callable
from functools import partial

import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import (
    IDENTITY,
    APIKeyVerifier,
    Auth,
    Presence,
    PresenceUnavailable,
    RedisPresence,
    by_identity,
    from_query,
)
from strands_trio.redis import serve_live_redis

#: Token to user name. A real site gives its pages short-lived JWTs (``JWTVerifier``).
TOKENS = {"t-ann": "Ann", "t-bob": "Bob", "t-cy": "Cy"}


def make_app(presence: Presence) -> StrandsApp:
    """The chat, around the presence middleware it is given."""
    auth = Auth(verifier=APIKeyVerifier(keys=TOKENS), source=from_query("token"))
    app = StrandsApp(middleware=[auth, presence])  # Auth first: Presence sees its identity

    def name(context: Context) -> str:
        identity = IDENTITY.get(context)  # verified by Auth, carried in metadata
        return identity.subject if identity else "?"

    @app.on_connection_request
    async def place(request: ConnectionRequestContext) -> bool:
        request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
        return True  # Auth has already refused a missing or unknown token (4401)

    @app.on_new_connection
    async def joined(context: Context) -> None:
        members = await presence.members(context.room_id)  # the newcomer is already in
        names = ", ".join(member.fields["name"] for member in members)
        await app.send_private_message(context.client_id, f"here: {names}")

    @app.on_message
    async def chat(message: str, context: Context) -> None:
        if message != "/who":
            await app.send_room_message(context.room_id, f"{name(context)}: {message}")
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
        await app.send_room_message(context.room_id, f"{name(context)} left, {count} here")

    return app


#: One backend process: members in its memory.
app = make_app(Presence(fields={"name": by_identity}))  # the name: the Auth subject


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
        presence = Presence(store=store, fields={"name": by_identity})
        replica = make_app(presence)
        await nursery.start(partial(replica.serve, broker_host, broker_port, connect=connect))
        task_status.started(store)


if __name__ == "__main__":
    trio.run(serve_replica, "redis://localhost:6379")
