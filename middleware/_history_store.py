"""Where room history lives: the :class:`HistoryStore` port, and :class:`MemoryHistory`.

Theory of operation. A store keeps, per room, an *epoch* (a random string), the last
*offset* given (an integer, 1 for the room's first message) and the last messages, bounded by
count and by age. :meth:`HistoryStore.append` gives a message its offset and keeps it in one
step, so two messages never share an offset and none is skipped; :meth:`HistoryStore.since`
answers a client that asks for what came after its last offset: the kept messages, or why
they cannot be given (:class:`Since`).

A room's epoch is made when the store first hears of the room, and so again after the store
lost it (a process restarted with a :class:`MemoryHistory`, a Redis flushed under a
:class:`~strands_trio.middleware.RedisHistory`): a client whose epoch is not the room's
cannot know what it missed, and is told so.

A store keeps the message as the backend gave it, without the fields that
:func:`stamp` adds (``room``, ``offset``, ``epoch``): stamping is deterministic, so a replayed
message is, byte for byte, the message first sent.

:class:`MemoryHistory` does everything synchronously in its ``async`` methods, never yielding
to Trio's scheduler: a message's offset is given, the message kept and (by the caller) put in
the connection's outbox without another task running in between, so the outbox holds a
room's messages in offset order.
"""

from __future__ import annotations

import collections
import math
import secrets
from typing import Final, NamedTuple, Protocol, runtime_checkable

import attrs
import orjson
import trio

__all__ = [
    "HistoryStore",
    "HistoryUnavailable",
    "MemoryHistory",
    "MemoryHistoryStatistics",
    "Position",
    "Since",
    "new_epoch",
    "stamp",
]

#: Why a room could not be recovered, as the ``reason`` of ``strands.recovered``.
EPOCH_CHANGED: Final = "epoch_changed"
TOO_OLD: Final = "too_old"
AHEAD: Final = "ahead"


class HistoryUnavailable(Exception):
    """The history store cannot answer now (Redis is unreachable)."""


def new_epoch() -> str:
    """A fresh random epoch: 16 hexadecimal digits."""
    return secrets.token_hex(8)


def stamp(text: str, room_json: str, offset: int, epoch: str) -> str:
    """*text* (a JSON object) with ``"room"``, ``"offset"`` and ``"epoch"`` added at its end.

    *room_json* is the room id already encoded as a JSON string. The fields are appended
    after the object's own, so a message that has fields of those names is sent with both,
    and a JSON parser keeps the last: ours.
    """
    body = text[:-1] if text[-1] == "}" else text.rstrip()[:-1]  # fast path: no spaces
    if body[-1] in " \t\r\n":
        body = body.rstrip()
    comma = "" if body[-1] == "{" else ","
    return f'{body}{comma}"room":{room_json},"offset":{offset},"epoch":"{epoch}"}}'


def room_json(room: str) -> str:
    """*room* as a JSON string."""
    return orjson.dumps(room).decode()


class Position(NamedTuple):
    """Where a room is: its epoch and the offset of its last message (0: none yet). A named
    tuple rather than an attrs class: one is made per message sent, and this is cheaper."""

    epoch: str
    offset: int


@attrs.frozen(kw_only=True)
class Since:
    """A store's answer to "what came in *room* after *offset* of *epoch*?".

    Attributes:
        epoch: The room's epoch now.
        offset: The room's last offset now.
        recovered: Whether *messages* is everything after the asked offset, up to *offset*.
        messages: ``(offset, text)`` in offset order, the text as appended (not stamped);
            empty unless *recovered*.
        reason: Why not recovered: ``"epoch_changed"`` (not the room's epoch: its history
            was lost since), ``"too_old"`` (the store no longer reaches back that far), or
            ``"ahead"`` (an offset the room never reached); ``None`` when recovered.
    """

    epoch: str
    offset: int
    recovered: bool
    messages: tuple[tuple[int, str], ...] = ()
    reason: str | None = None


def judge(
    position: Position, epoch: str, offset: int, oldest: int | None
) -> tuple[bool, str | None]:
    """Whether a client at (*epoch*, *offset*) can catch up on a room at *position* whose
    oldest kept message has offset *oldest* (``None``: none kept), and if not, why.

    ``("", 0)`` is a client that has seen nothing of the room yet and follows it from its
    start (``strands.js``'s ``follow``): it catches up while the room's first message is still
    kept, under whatever epoch the room has."""
    if epoch == "" and offset == 0:
        epoch = position.epoch
    if epoch != position.epoch:
        return False, EPOCH_CHANGED
    if offset > position.offset:
        return False, AHEAD
    if offset == position.offset:
        return True, None
    if oldest is None or oldest > offset + 1:
        return False, TOO_OLD
    return True, None


@runtime_checkable
class HistoryStore(Protocol):
    """Where a :class:`~strands_trio.middleware.History` keeps room messages."""

    async def append(self, room: str, text: str) -> Position:
        """Give *text* the room's next offset and keep it; return the room's epoch and that
        offset.

        Raises:
            HistoryUnavailable: the store cannot record now.
        """
        ...

    async def since(self, room: str, epoch: str, offset: int) -> Since:
        """The messages of *room* after *offset*, if *epoch* is the room's and the store still
        has them all.

        Raises:
            HistoryUnavailable: the store cannot answer now.
        """
        ...


@attrs.frozen(kw_only=True)
class MemoryHistoryStatistics:
    """What a :class:`MemoryHistory` holds and has done.

    Attributes:
        rooms: Rooms known (each keeps its epoch and offset).
        messages: Messages kept, in all rooms.
        appended: Messages appended.
        expired: Messages dropped for their age or the room's size.
    """

    rooms: int
    messages: int
    appended: int
    expired: int


class _Room:
    __slots__ = ("entries", "epoch", "offset")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: collections.deque[tuple[int, float, str]] = collections.deque(maxlen=size)


class MemoryHistory:
    """Room history in this process's memory: for one backend (a replica cannot see
    another's; use :class:`~strands_trio.middleware.RedisHistory` for several).

    Args:
        size: Messages kept per room, the last ones.
        max_age: Seconds a message is kept (by Trio's clock); ``math.inf`` for no limit.

    Raises:
        TypeError: *size* is not an int, or *max_age* not a number.
        ValueError: *size* is below 1, or *max_age* not above 0.

    A room's epoch and offset are kept while the process lives, even when all its messages
    have expired (a few dozen bytes per room ever used); a restart makes new epochs.
    """

    __slots__ = ("_appended", "_expired", "_rooms", "max_age", "size")

    def __init__(self, *, size: int = 100, max_age: float = 300.0) -> None:
        if type(size) is not int:
            raise TypeError(f"size must be an int, got {size!r}")
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        if isinstance(max_age, bool) or not isinstance(max_age, int | float):
            raise TypeError(f"max_age must be a number of seconds, got {max_age!r}")
        if not max_age > 0:
            raise ValueError(f"max_age must be above 0 seconds (math.inf: none), got {max_age}")
        self.size = size
        self.max_age = float(max_age)
        self._rooms: dict[str, _Room] = {}
        self._appended = self._expired = 0

    def __repr__(self) -> str:
        return f"<MemoryHistory size={self.size} max_age={self.max_age}>"

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room(self.size)
        return state

    def _expire(self, state: _Room, now: float) -> None:
        entries = state.entries
        if self.max_age != math.inf:
            cutoff = now - self.max_age
            while entries and entries[0][1] <= cutoff:
                entries.popleft()
                self._expired += 1

    async def append(self, room: str, text: str) -> Position:
        """See :meth:`HistoryStore.append`; never yields to the scheduler."""
        state = self._rooms.get(room)
        if state is None:
            state = self._room(room)
        now = trio.current_time()
        entries = state.entries
        if entries and entries[0][1] <= now - self.max_age:
            self._expire(state, now)
        if len(entries) == self.size:
            self._expired += 1  # the deque's maxlen drops the oldest
        offset = state.offset = state.offset + 1
        entries.append((offset, now, text))
        self._appended += 1
        return Position(state.epoch, offset)

    async def since(self, room: str, epoch: str, offset: int) -> Since:
        """See :meth:`HistoryStore.since`; never yields to the scheduler."""
        state = self._room(room)
        self._expire(state, trio.current_time())
        entries = state.entries
        position = Position(state.epoch, state.offset)
        oldest = entries[0][0] if entries else None
        recovered, reason = judge(position, epoch, offset, oldest)
        if not recovered:
            return Since(epoch=state.epoch, offset=state.offset, recovered=False, reason=reason)
        missed = state.offset - offset
        kept = tuple((n, text) for n, _, text in list(entries)[len(entries) - missed :])
        return Since(epoch=state.epoch, offset=state.offset, recovered=True, messages=kept)

    def position(self, room: str) -> Position | None:
        """Where *room* is now, or ``None`` if the store has not heard of it."""
        state = self._rooms.get(room)
        return None if state is None else Position(state.epoch, state.offset)

    def clear(self) -> None:
        """Forget every room, as a restart would: the next message of a room starts a new
        epoch."""
        self._rooms.clear()

    def statistics(self) -> MemoryHistoryStatistics:
        """What the store holds and has done."""
        return MemoryHistoryStatistics(
            rooms=len(self._rooms),
            messages=sum(len(state.entries) for state in self._rooms.values()),
            appended=self._appended,
            expired=self._expired,
        )
