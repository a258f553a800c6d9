"""The quickstart's first backend as decorated functions on a StrandsApp."""

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import IDENTITY, APIKeyVerifier, Auth, from_query

app = StrandsApp(
    middleware=[
        Auth(
            verifier=APIKeyVerifier(keys={"key-of-ann": "ann", "key-of-bob": "bob"}),
            source=from_query("token"),  # ws://localhost:8080/ws/lobby?token=key-of-ann
        )
    ]
)


@app.on_connection_request
async def place(request: ConnectionRequestContext) -> bool:
    request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
    return True


@app.on_message
async def echo(message: str, context: Context) -> None:
    user = IDENTITY.get(context)
    name = user.subject if user else "?"
    await app.send_room_message(context.room_id, f"{name}: {message}")


if __name__ == "__main__":
    app.run("localhost", 8081)  # until Ctrl-C, then a graceful shutdown
