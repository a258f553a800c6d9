"""A small typed user app, checked with ``mypy --strict`` against an installed strands-trio.

Not a test module: ``.ci/run`` installs the project into a throwaway virtual environment (the
README's editable install, then a built wheel) and runs ``mypy --strict`` on this file from
outside the checkout, so the check sees strands-trio exactly as a user's app does. It fails if
mypy cannot find the package (an import hook it cannot follow) or if a decorator loses the
handlers' types.

The mistakes at the end must be reported: each carries a ``type: ignore`` for the error mypy
should find, and ``--strict`` (``warn_unused_ignores``) makes an ignore that silences nothing
an error itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import APIKeyVerifier, Auth, Logging, Rate, RateLimit


@attrs.frozen
class Say:
    """A chat line: ``{"type": "chat.say", "text": "..."}``."""

    text: str


@attrs.frozen
class Kick:
    """A moderator's order: ``{"type": "chat.kick", "who": "..."}``."""

    who: str


app = StrandsApp(
    middleware=[
        Logging(),
        Auth(verifier=APIKeyVerifier(keys={"k-123": "bot"})),
        RateLimit(messages=Rate(burst=10, per_second=2)),
    ]
)


@app.on_connection_request
async def admit(request: ConnectionRequestContext) -> bool:
    """Place the client in the room its URL names, if it says which client it is."""
    request.context.room_id = request.url.removeprefix("/ws/")
    return request.header("X-Client") is not None


@app.on_message
async def echo(message: str, context: Context) -> None:
    """Echo a message no route matched to the sender's room."""
    await app.send_room_message(context.room_id, f"echo: {message}")


@app.outgoing("chat.said")
@attrs.frozen
class Said:
    """What the room sees: ``{"type": "chat.said", "by": "...", "text": "..."}``."""

    by: str
    text: str


@app.on_message("chat.say", model=Say)
async def say(payload: Say, context: Context) -> None:
    """Send a chat line to the sender's room, as a typed message."""
    await app.send_room_message(context.room_id, Said(by=context.client_id, text=payload.text))


@attrs.frozen
class Count:
    """A call: ``{"type": "chat.count", "ref": 1}``; answered with a :class:`Counted`."""


@attrs.frozen
class Counted:
    """The reply's data: ``{"type": "reply", "ref": 1, "data": {"lines": 3}}``."""

    lines: int


@app.on_message("chat.count", model=Count)
async def count(payload: Count, context: Context) -> Counted:
    """Answer the caller alone with a model instance (a call: the message had a ref)."""
    return Counted(lines=3)


@app.on_message("chat.rooms")
def rooms(payload: dict[str, object], context: Context) -> list[str] | None:
    """A sync handler answering with JSON data (or None: ``data: null``)."""
    return [context.room_id]


# The decorators return the function they were given, with its type.
_admit: Callable[[ConnectionRequestContext], Awaitable[bool]] = admit
_say: Callable[[Say, Context], Awaitable[None]] = say
_count: Callable[[Count, Context], Awaitable[Counted]] = count
_rooms: Callable[[dict[str, object], Context], list[str] | None] = rooms

if TYPE_CHECKING:  # mistakes mypy must report (never run: some are refused at run time too)

    @app.on_message("chat.kick", model=Kick)  # type: ignore[arg-type]
    async def kick(payload: Say, context: Context) -> None:
        """The payload type is not the route's model."""

    @app.on_new_connection  # type: ignore[type-var]
    async def joined(context: Context, extra: int) -> None:
        """One parameter too many."""

    @app.on_connection_request  # type: ignore[type-var]
    async def admit_text(request: ConnectionRequestContext) -> str:
        """An answer that is not a bool."""
        return "yes"

    async def send_a_number(context: Context) -> None:
        """A message that is neither text nor a model instance."""
        await app.send_room_message(context.room_id, 3)  # type: ignore[arg-type]


if __name__ == "__main__":
    trio.run(app.serve, "localhost", 8081)
