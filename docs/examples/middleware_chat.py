"""A chat backend with the built-in middleware: JWT auth, rate limits, logging and roles,
and typed messages routed by their "type" field."""

import logging

import attrs

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import (
    IDENTITY,
    Auth,
    JWTVerifier,
    Logging,
    Presence,
    Rate,
    RateLimit,
    by_identity,
    from_query,
    roles,
)

SECRET = "change me: a secret of at least 32 bytes for HS256"

#: Who is in each room, named by the verified identity (a browser cannot send headers).
presence = Presence(fields={"name": by_identity})

app = StrandsApp(
    middleware=[
        Logging(level=logging.INFO),  # outermost: sees every event and its outcome
        Auth(  # then Auth: what follows sees only verified connections
            verifier=JWTVerifier(key=SECRET, algorithms=("HS256",), audience="chat"),
            source=from_query("token"),  # ws://host/ws/lobby?token=...
        ),
        RateLimit(  # connection requests and messages only
            messages=Rate(burst=5, per_second=1),  # per client
            connections=Rate(burst=10, per_second=1),  # per remote IP
        ),
        presence,  # last: nothing before it stops a new_connection or disconnected event
    ]
)


@attrs.frozen
class Say:
    text: str


@attrs.frozen
class Kick:
    client_id: str


@app.on_connection_request
async def place(request: ConnectionRequestContext) -> bool:
    request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
    return True  # Auth has already checked the token


@app.on_message("chat.say", model=Say)
async def say(payload: Say, context: Context) -> None:
    user = IDENTITY.get(context)  # the identity Auth verified, carried in metadata
    assert user is not None
    await app.send_room_message(context.room_id, f"{user.subject}: {payload.text}")


@roles("admin")
@app.on_message("chat.kick", model=Kick)
async def kick(payload: Kick, context: Context) -> None:
    await app.send_private_message(payload.client_id, "you were kicked")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run("localhost", 8081)
