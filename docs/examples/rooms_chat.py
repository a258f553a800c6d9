"""A chat where each client is in its own room and joins others: ``join_room`` and
``leave_room`` on strands-trio's broker, with the presence middleware following the joins.
A client connects to ``/ws/<its room>`` and sends ``{"type": "join", "room": "games"}``,
``{"type": "leave", ...}`` or ``{"type": "say", "room": "games", "text": "hi"}``."""

import attrs

from strands_trio import ConnectionRequestContext, Context, RoomsUnsupported, StrandsApp
from strands_trio.middleware import Presence


@attrs.frozen
class Join:
    room: str


@attrs.frozen
class Leave:
    room: str


@attrs.frozen
class Say:
    room: str
    text: str


presence = Presence()
app = StrandsApp(middleware=[presence])


@app.on_connection_request
async def place(request: ConnectionRequestContext) -> bool:
    request.context.room_id = request.path.removeprefix("/ws/") or "lobby"
    return True


@app.on_message("join", model=Join)
async def join(message: Join, context: Context) -> None:
    try:
        await app.join_room(context.client_id, message.room)
    except RoomsUnsupported:  # the reference broker: one room per client, fixed at connect
        await app.send_private_message(context.client_id, "joining rooms is not available")
        return
    count = await presence.count(message.room)  # the join is recorded already
    await app.send_room_message(message.room, f"{context.client_id} joined, {count} here")


@app.on_message("leave", model=Leave)
async def leave(message: Leave, context: Context) -> None:
    await app.leave_room(context.client_id, message.room)


@app.on_message("say", model=Say)
async def say(message: Say, context: Context) -> None:
    # Sent once to each member, however many of its rooms the sender shares with them.
    await app.send_room_message(message.room, f"{context.client_id}: {message.text}")
