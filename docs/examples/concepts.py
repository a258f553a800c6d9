"""Concepts: the caller owns time, and a backend's lifetime is a scope in your program."""

import trio

from strands_trio import BrokerConnectionError, ClientConfig, Context, StrandsApp

app = StrandsApp(config=ClientConfig(shutdown_timeout=2))


@app.on_message
async def echo(message: str, context: Context) -> None:
    await app.send_room_message(context.room_id, message)


async def start_or_give_up(nursery: trio.Nursery, host: str, port: int) -> bool:
    """Start the backend in *nursery*, retrying for at most 5 seconds."""
    with trio.move_on_after(5):
        await nursery.start(app.serve, host, port)  # retries with backoff until connected
        return True
    return False  # the half-started client was cancelled with the scope: nothing is left


async def serve_for(seconds: float, host: str, port: int) -> None:
    """Serve for a while, then stop gracefully: cancelling is the only way to stop."""
    with trio.move_on_after(seconds):
        await app.serve(host, port)
    # Here every task the client started has finished, and its connection is closed.


async def try_once(host: str, port: int) -> str:
    """One attempt, no reconnection: a refused connection is an exception, not a retry."""
    once = StrandsApp(config=ClientConfig(reconnect=False))
    try:
        async with once.connected(host, port):
            return "connected"
    except BrokerConnectionError as exc:
        return f"no broker: {exc}"
