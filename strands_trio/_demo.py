"""The demo: an example chat backend, driven by scripted WebSocket clients.

Everything runs in one process and one nursery: an in-memory :class:`FakeBroker` (behaving
like the reference broker) listens on a loopback TCP port, the example backend connects to it
over real TCP as it would to a production broker, and a script plays three browser clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import trio

from . import ConnectionRequestContext, Context, StrandsApp
from .testing import ConnectionRejected, FakeBroker

TOKENS = {"token-alice": "alice", "token-bob": "bob"}


def make_chat_app() -> StrandsApp:
    """The example backend: token auth at connection time, rooms from the URL, join/leave
    notices, and a ``/who`` command answered privately."""
    app = StrandsApp()
    members: dict[str, set[str]] = {}

    @app.on_connection_request
    async def authenticate(request: ConnectionRequestContext) -> bool:
        token = (request.header("authorization") or "").removeprefix("Bearer ")
        user = TOKENS.get(token)
        if user is None:
            return False
        request.context.client_id = f"{user}-{request.remote_addr.rsplit(':', 1)[-1]}"
        request.context.room_id = request.url.removeprefix("/ws/") or "lobby"
        request.context.metadata = {"user": user}
        return True

    @app.on_new_connection
    async def joined(context: Context) -> None:
        members.setdefault(context.room_id, set()).add(context.metadata["user"])
        await app.send_room_message(context.room_id, f"* {context.metadata['user']} joined")

    @app.on_message
    async def chat(message: str, context: Context) -> None:
        user = context.metadata["user"]
        if message == "/who":
            names = ", ".join(sorted(members.get(context.room_id, ())))
            await app.send_private_message(context.client_id, f"in {context.room_id}: {names}")
        else:
            await app.send_room_message(
                context.room_id, json.dumps({"from": user, "text": message})
            )

    @app.on_disconnect
    async def left(context: Context) -> None:
        members.get(context.room_id, set()).discard(context.metadata["user"])
        await app.send_room_message(context.room_id, f"* {context.metadata['user']} left")

    return app


async def run_demo(say: Callable[[str], None] = print) -> None:
    """Run the scripted conversation, reporting it through *say*."""
    async with trio.open_nursery() as nursery:
        broker = FakeBroker()
        await nursery.start(broker.serve)
        port = await nursery.start(broker.serve_tcp)
        say(f"fake broker (reference behaviour) listening for backends on 127.0.0.1:{port}")
        app = make_chat_app()
        async with app.connected("127.0.0.1", port):
            say("chat backend connected over TCP\n")
            alice = await broker.connect(
                "/ws/lobby", headers={"Authorization": "Bearer token-alice"}
            )
            say(f"alice connects -> accepted as {alice.client_id!r} in {alice.room_id!r}")
            say(f"  alice receives: {await alice.receive()}")
            try:
                await broker.connect("/ws/lobby", headers={"Authorization": "Bearer stolen"})
            except ConnectionRejected as exc:
                say(f"mallory connects with a bad token -> refused ({exc})")
            bob = await broker.connect("/ws/lobby", headers={"Authorization": "Bearer token-bob"})
            say(f"bob connects -> accepted as {bob.client_id!r}")
            say(f"  alice receives: {await alice.receive()}")
            say(f"  bob receives:   {await bob.receive()}")
            await alice.send("hello bob!")
            say("alice sends 'hello bob!'")
            say(f"  bob receives:   {await bob.receive()}")
            say(f"  alice receives: {await alice.receive()}")
            await bob.send("/who")
            say("bob sends '/who'")
            say(f"  bob receives:   {await bob.receive()}")
            await bob.close()
            say("bob leaves")
            say(f"  alice receives: {await alice.receive()}")
            stats = app.statistics()
            say(
                f"\nbackend statistics: {stats.events_received} events received, "
                f"{stats.frames_sent} frames sent in {stats.writes} writes, "
                f"{stats.requests_accepted} accepted / {stats.requests_rejected} rejected, "
                f"{stats.handler_errors} handler errors"
            )
        nursery.cancel_scope.cancel()
    say("demo finished: the backend shut down cleanly")
