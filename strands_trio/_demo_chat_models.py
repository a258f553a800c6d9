"""The demo chat's wire messages (attrs models) and its index of recent lines per room.

Messages from the page: ``chat.say``, ``chat.announce``, and three calls (sent with a ``ref``,
answered by a ``reply``): ``chat.older``, ``chat.join`` and ``chat.leave``. Messages to the
page: ``said`` (kept by the ``History`` middleware, so with ``room``, ``offset`` and ``epoch``),
``joined``, ``left``, ``members`` and ``announcement``.
"""

from __future__ import annotations

import re
from collections import deque

import attrs

from ._errors import StrandsError

__all__ = [
    "Announce",
    "Announcement",
    "BadRoom",
    "Joined",
    "Left",
    "Line",
    "Lines",
    "Members",
    "Older",
    "RoomIndex",
    "RoomRequest",
    "Said",
    "Say",
    "check_room",
]

#: How many lines of each room the backend indexes for ``chat.older``.
INDEX_LINES = 200

#: How many lines one ``chat.older`` call returns at most.
OLDER_LINES = 20

#: How many rooms a client may be in besides its connect-time room.
MAX_JOINED = 4

#: A room name a page may join: letters, digits, ``-`` and ``_``, 1 to 32 of them.
ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class BadRoom(StrandsError):
    """A ``chat.join``, ``chat.leave``, ``chat.say`` or ``chat.older`` naming a room it
    cannot: the caller gets ``{"type": "error", "ref": ..., "code": "bad_room", "reason":
    ...}``."""

    error_code = "bad_room"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.client_reason = reason


def check_room(room: str) -> str:
    """*room* if it is a room name a page may join, else :class:`BadRoom` saying why."""
    if not ROOM_NAME.fullmatch(room):
        raise BadRoom(f"bad room name {room[:40]!r}: 1 to 32 letters, digits, '-' or '_'")
    return room


@attrs.frozen
class Say:
    """A chat line: ``{"type": "chat.say", "text": "...", "room": "..."}``; without a room
    (or ``""``), to the connect-time room."""

    text: str = attrs.field(validator=attrs.validators.max_len(500))
    room: str = ""


@attrs.frozen
class Announce:
    """An announcement to every room, for admins: ``{"type": "chat.announce", "text": "..."}``."""

    text: str = attrs.field(validator=attrs.validators.max_len(500))


@attrs.frozen
class Older:
    """A call for a room's lines before an offset: ``{"type": "chat.older", "ref": 3, "room":
    "lobby", "before": 41}``; without ``before`` (or ``null``), the room's last lines."""

    room: str = ""
    before: int | None = None


@attrs.frozen
class RoomRequest:
    """A call to join or leave a room: ``{"type": "chat.join", "ref": 4, "room": "side"}``
    (or ``chat.leave``)."""

    room: str = attrs.field(validator=attrs.validators.max_len(64))


@attrs.frozen
class Joined:
    """Someone joined a room: ``{"type": "joined", "room": "...", "name": "..."}``."""

    name: str
    room: str


@attrs.frozen
class Left:
    """Someone left a room: ``{"type": "left", "room": "...", "name": "..."}``."""

    name: str
    room: str


@attrs.frozen
class Members:
    """Who is in a room, oldest first: ``{"type": "members", "room": "...", "names": [...]}``;
    sent to the room at every join and leave."""

    room: str
    names: list[str]


@attrs.frozen
class Said:
    """A chat line, as the room sees it: ``{"type": "said", "name": "...", "text": "..."}``,
    sent through ``History``, which adds ``room``, ``offset`` and ``epoch``."""

    name: str
    text: str


@attrs.frozen
class Announcement:
    """An admin's announcement: ``{"type": "announcement", "name": "...", "text": "..."}``."""

    name: str
    text: str


@attrs.frozen
class Line:
    """A chat line in a ``chat.older`` reply: its offset, who said it, and what."""

    offset: int
    name: str
    text: str


@attrs.frozen
class Lines:
    """The reply to ``chat.older``: up to :data:`OLDER_LINES` lines of *room* in *epoch*,
    oldest first, and whether older ones are indexed (``more``)."""

    room: str
    epoch: str
    lines: list[Line]
    more: bool


class RoomIndex:
    """The last *size* lines of each room with their offsets, for ``chat.older``.

    Why its own index: the ``History`` store answers one question, "everything after offset
    N, if it still has all of it" (``HistoryStore.since``), which is what recovery needs; it
    cannot read a range *before* an offset, nor say which offset is its oldest. The demo
    records here what ``History.send_room_message`` returns (the epoch and offset given), so
    the lines and offsets are the ones the pages were sent. A room's lines of an older epoch
    are dropped when a new one starts.
    """

    def __init__(self, size: int = INDEX_LINES) -> None:
        self.size = size
        self._rooms: dict[str, tuple[str, deque[Line]]] = {}

    def add(self, room: str, epoch: str, line: Line) -> None:
        """Record *line*, sent to *room* in *epoch*."""
        kept = self._rooms.get(room)
        if kept is None or kept[0] != epoch:
            kept = self._rooms[room] = (epoch, deque(maxlen=self.size))
        kept[1].append(line)

    def older(self, room: str, before: int | None, count: int = OLDER_LINES) -> Lines:
        """Up to *count* lines of *room* before offset *before* (``None``: the last ones)."""
        epoch, lines = self._rooms.get(room, ("", deque()))
        earlier = [line for line in lines if before is None or line.offset < before]
        return Lines(room=room, epoch=epoch, lines=earlier[-count:], more=len(earlier) > count)
