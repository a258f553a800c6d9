"""Typed messages both ways: a routed model in, an outgoing model out."""

import attrs

from strands_trio import Context, StrandsApp

app = StrandsApp()


@attrs.frozen
class Say:
    text: str


@app.outgoing("chat.said")
@attrs.frozen
class Said:
    name: str
    text: str


@app.on_message("chat.say", model=Say)
async def say(payload: Say, context: Context) -> None:
    await app.send_room_message(context.room_id, Said(name=context.client_id, text=payload.text))
    # the room gets {"type": "chat.said", "name": "...", "text": "..."}
