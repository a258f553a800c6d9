"""A backend for browser clients (docs/browser-clients.md): the token from a subprotocol, the
query string or a cookie, and the room from the path."""

from strands_trio import ClientConfig, ConnectionRequestContext, StrandsApp
from strands_trio.middleware import (
    APIKeyVerifier,
    Auth,
    first_of,
    from_cookie,
    from_query,
    from_subprotocol,
)

TOKENS = {"t-ann": "ann", "t-bob": "bob"}  # token -> user; use short-lived JWTs in production

#: A backend next to its broker: back within 2 s of a broker restart (the default: up to 30 s).
NEAR_THE_BROKER = ClientConfig(max_reconnect_delay=2.0)

app = StrandsApp(
    config=NEAR_THE_BROKER,
    middleware=[
        Auth(
            verifier=APIKeyVerifier(keys=TOKENS),
            source=first_of(
                from_subprotocol("bearer."),  # new WebSocket(url, ["strands", "bearer." + t])
                from_query("token"),  # new WebSocket("/ws/lobby?token=" + t)
                from_cookie("session"),  # a cookie set by your site
            ),
        )
    ],
)


@app.on_connection_request
async def place(request: ConnectionRequestContext) -> bool:
    room = request.path.removeprefix("/ws/").strip("/")  # /ws/<room>: the path, never the query
    if not room:
        return request.refuse("connect to /ws/<room>", code=404)  # close code 4404
    request.context.room_id = room
    request.context.metadata["lang"] = request.param("lang", "en")  # /ws/lobby?lang=fr
    return True
