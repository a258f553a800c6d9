"""Replies: a typed route answers the caller of ``client.call()`` with what it returns."""

import attrs
import trio

from strands_trio import Context, StrandsApp, use_middleware
from strands_trio.middleware import Timeout

app = StrandsApp()
history: list[str] = [f"line {n}" for n in range(1, 101)]


@attrs.frozen
class Older:
    before: int
    count: int = 20


@attrs.frozen
class Lines:
    lines: list[str]
    more: bool


@app.on_message("chat.older", model=Older)
async def older(payload: Older, context: Context) -> Lines:
    start = max(0, payload.before - payload.count)
    return Lines(lines=history[start : payload.before], more=start > 0)
    # a call gets {"type": "reply", "ref": <its ref>, "data": {"lines": [...], "more": true}}


@app.on_message("chat.search")
@use_middleware(Timeout(2))  # this route's deadline: a call past it gets a "timeout" error
async def search(payload: dict[str, object], context: Context) -> list[str]:
    await trio.lowlevel.checkpoint()  # a real search would await a database here
    return [line for line in history if str(payload.get("text", "")) in line]
