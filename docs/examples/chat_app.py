"""The same backend as decorated functions on a StrandsApp."""

from strands_trio import ConnectionRequestContext, Context, StrandsApp

app = StrandsApp()


@app.on_connection_request
async def admit(request: ConnectionRequestContext) -> bool:
    request.context.room_id = request.url.removeprefix("/ws/")
    return request.header("Authorization") == "Bearer valid-token"


@app.on_message
async def echo(message: str, context: Context) -> None:
    await app.send_room_message(context.room_id, f"echo: {message}")


@app.on_disconnect
def left(context: Context) -> None:  # a plain function runs in a worker thread
    print(f"{context.client_id} left {context.room_id}")


if __name__ == "__main__":
    app.run("localhost", 8081)  # until Ctrl-C, then a graceful shutdown
