"""Joining and leaving rooms: what ``join_room`` and ``leave_room`` of
:class:`~strands_trio.StrandsClient` and :class:`~strands_trio.StrandsApp` send, and whom they
tell.

Theory of operation. strands-trio's broker keeps each client in its connect-time room plus
the rooms a backend made it join (the ``join_room`` and ``leave_room`` extension actions);
``message_to_room`` then reaches every member once. The reference broker has one room per
client, fixed at connect, and ignores unknown actions: a join sent there would be lost without
a word, so :func:`change_room` refuses with :class:`~strands_trio.RoomsUnsupported` when the
link up now is to a broker that sent no ``hello`` (``docs/rooms.md`` says why this library
does not emulate rooms there). While a link is up whose first frame has not come yet, the
broker is not known: the action is sent (the reference would ignore it).

Once sent, each middleware that implements :class:`RoomListener` (the presence middleware) is
told, synchronously, so that what the backend knows of rooms follows its own calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._engine import Engine
from ._errors import RoomsUnsupported, raise_type_error
from .protocol import JoinRoom, LeaveRoom, encode

__all__ = ["RoomListener", "change_room"]

logger = logging.getLogger("strands_trio.client")


@runtime_checkable
class RoomListener(Protocol):
    """A middleware told of each room a backend made a client join or leave (through
    ``join_room``/``leave_room`` of its client or app)."""

    def on_room_change(self, client_id: str, room_id: str, joined: bool) -> None:
        """*client_id* joined (*joined*) or left *room_id*. Must not block."""


async def change_room(
    engine: Engine,
    middleware: Sequence[Any],
    client_id: str,
    room_id: str,
    *,
    join: bool,
    wait: bool,
) -> None:
    """Send a ``join_room`` (*join*) or ``leave_room`` action, then tell the listeners in
    *middleware*.

    Raises:
        RoomsUnsupported: the broker is the reference one (it sent no ``hello``).
        NotConnectedError: there is no connection (and *wait* is false).
        TypeError: *client_id* or *room_id* is not a string.
    """
    if type(client_id) is not str or type(room_id) is not str:
        raise_type_error(client_id=client_id, room_id=room_id)
    name = "join_room" if join else "leave_room"
    link = engine.link
    if link is not None and link.identity is None:
        raise RoomsUnsupported(
            f"{name} needs strands-trio's broker: the broker at {link.where} sent no hello, "
            "so it is the reference broker, which has one room per client, fixed at connect"
        )
    frame = (JoinRoom if join else LeaveRoom)(
        request_id=engine.next_id(), conn_id=client_id, room_id=room_id
    )
    await engine.send(encode(frame), wait)
    for listener in middleware:
        if isinstance(listener, RoomListener):
            try:
                listener.on_room_change(client_id, room_id, join)
            except Exception:
                logger.exception("on_room_change of %r raised; the others are still told", listener)
