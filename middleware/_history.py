"""The history middleware: room messages with offsets, and their replay to a client that
reconnects.

Theory of operation. A :class:`History` does two things:

- **Sending.** :meth:`History.send_room_message` is the send path of the rooms and message
  types it keeps: it hands the message to the store, which gives it the room's next offset
  and keeps it (:meth:`HistoryStore.append`), then sends it to the room with three fields
  added at its end: ``"room"``, ``"offset"`` and ``"epoch"`` (:func:`stamp`). Other messages
  go out unchanged. With a :class:`MemoryHistory` nothing yields between the offset and the
  outbox, so one backend sends a room's messages in offset order; with Redis, concurrent
  sends may leave in another order, which the client puts right (it orders by offset).
- **Recovering.** A client that reconnects sends ``{"type": "strands.recover", "rooms":
  {room: {"epoch": ..., "offset": ...}}}``. The middleware answers it instead of the app's
  handlers: for each room the client may recover (``can_recover``, by default its
  connect-time room), it asks the store for what came after the client's offset and sends
  those messages to that client alone, in order, each exactly as first sent; then one
  ``{"type": "strands.recovered", "rooms": {room: {"recovered": ..., "epoch": ...,
  "offset": ..., "reason": ...}}}``.

*Why no replayed message can follow* ``strands.recovered``: the replay and the answer are
sent by one task, one after the other, into the connection's outbox, which the broker relays
in order to the client. Live messages are another matter: one that the store numbered after
the replay's snapshot reaches the client through the room, before or after the answer, and
the client delivers it after the replay; one numbered before the snapshot may reach the client
both live and replayed, and the client drops the second by its offset.

Everything else passes straight through. A recover message that is not well formed is
counted, logged at DEBUG and answered as far as it can be (a room whose entry is bad gets
``recovered: false`` with the reason ``"invalid"``); a store that fails is counted and its
rooms are answered ``recovered: false`` with the reason ``"unavailable"``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final

import attrs
import orjson

from strands_trio import CallNext, EventType, ExecutionContext, Sender

from ._history_store import (
    HistoryStore,
    HistoryUnavailable,
    MemoryHistory,
    Position,
    room_json,
    stamp,
)

__all__ = ["RECOVER", "RECOVERED", "History", "HistoryStatistics"]

logger = logging.getLogger("strands_trio.middleware.history")

_MESSAGE = EventType.MESSAGE
#: The message type a client sends to recover, and the one it is answered with.
RECOVER: Final = "strands.recover"
RECOVERED: Final = "strands.recovered"

#: ``(ctx, room) -> bool``: whether the client of a recover message may read *room*'s history.
RecoverCheck = Callable[[ExecutionContext, str], "bool | Awaitable[bool]"]


def own_room(ctx: ExecutionContext, room: str) -> bool:
    """The default ``can_recover``: a client may recover its connect-time room only."""
    return room == ctx.context.room_id


@attrs.frozen(kw_only=True)
class HistoryStatistics:
    """What a :class:`History` middleware has counted (:meth:`History.statistics`).

    Attributes:
        kept: Room messages sent with an offset (and kept by the store).
        passed: Room messages sent through :meth:`History.send_room_message` without one
            (a room or type not kept).
        recovers: Recover messages answered.
        recovered: Rooms answered ``recovered: true``.
        not_recovered: Rooms answered ``recovered: false``.
        replayed: Messages replayed.
        invalid: Recover messages, or rooms in them, that were not well formed.
        store_errors: Calls into the store that failed.
    """

    kept: int
    passed: int
    recovers: int
    recovered: int
    not_recovered: int
    replayed: int
    invalid: int
    store_errors: int


def _to_rooms(value: object) -> Callable[[str], bool] | None:
    if value is None or callable(value):
        return value
    if isinstance(value, str) or not isinstance(value, Collection):
        raise TypeError(f"rooms must be a collection of room ids or (room) -> bool, got {value!r}")
    return frozenset(value).__contains__


class History:
    """Keep room messages with offsets, and replay them to clients that reconnect::

        history = History(store=MemoryHistory(size=100, max_age=300), types={"chat.said"})
        app = StrandsApp(middleware=[history])

        @app.on_message("chat.say", model=Say)
        async def say(payload: Say, context: Context) -> None:
            await history.send_room_message(app, context.room_id, Said(text=payload.text))

    Put it in the app's list, before any middleware that would refuse the client's
    ``strands.recover`` message (a guard, a typed route).

    Args:
        store: Where messages are kept: a fresh :class:`MemoryHistory` by default, or a
            :class:`~strands_trio.middleware.RedisHistory` shared by backend replicas.
        rooms: The rooms kept: a collection of ids, or ``(room) -> bool``; ``None``, all.
        types: The message types kept (the value of *type_field*); ``None``, all.
        can_recover: ``(ctx, room) -> bool`` (or awaitable): whether the client that sent a
            recover message may read *room*'s history; by default, its connect-time room
            only. With rooms joined later, check them here.
        max_rooms: Rooms answered per recover message; the rest get ``"too_many"``.
        type_field: The field that names a message's type.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: *max_rooms* is below 1.
    """

    __slots__ = (
        "_can_recover",
        "_counts",
        "_json",
        "_rooms",
        "_types",
        "max_rooms",
        "store",
        "type_field",
    )

    def __init__(
        self,
        *,
        store: HistoryStore | None = None,
        rooms: Collection[str] | Callable[[str], bool] | None = None,
        types: Collection[str] | None = None,
        can_recover: RecoverCheck = own_room,
        max_rooms: int = 64,
        type_field: str = "type",
    ) -> None:
        if store is not None and not isinstance(store, HistoryStore):
            raise TypeError(f"store must be a HistoryStore (MemoryHistory ...), got {store!r}")
        if types is not None and (isinstance(types, str) or not isinstance(types, Collection)):
            raise TypeError(f"types must be a collection of message types, got {types!r}")
        if not callable(can_recover):
            raise TypeError(
                f"can_recover must be a function (ctx, room) -> bool, got {can_recover!r}"
            )
        if type(max_rooms) is not int or max_rooms < 1:
            raise ValueError(f"max_rooms must be an int of at least 1, got {max_rooms!r}")
        if not isinstance(type_field, str) or not type_field:
            raise TypeError(f"type_field must be a non-empty str, got {type_field!r}")
        self.store: HistoryStore = MemoryHistory() if store is None else store
        self._rooms = _to_rooms(rooms)
        self._types = None if types is None else frozenset(types)
        self._can_recover = can_recover
        self.max_rooms = max_rooms
        self.type_field = type_field
        self._json: dict[str, str] = {}  # room -> its id as a JSON string, for stamping
        self._counts = dict.fromkeys(attrs.fields_dict(HistoryStatistics), 0)

    def __repr__(self) -> str:
        return f"<History store={self.store!r}>"

    # ------------------------------------------------------------------ sending

    def keeps(self, room: str, kind: object) -> bool:
        """Whether a message of type *kind* to *room* is kept (and sent with an offset)."""
        return (self._rooms is None or self._rooms(room)) and (
            self._types is None or kind in self._types
        )

    async def send_room_message(
        self,
        sender: Sender,
        room_id: str,
        message: str | Mapping[str, Any] | Any,
        *,
        wait: bool = False,
    ) -> Position | None:
        """Send *message* to *room_id* through *sender* (the app, the client, or
        ``ctx.get_client()``): kept with the room's next offset if the room and its type are
        kept, else unchanged.

        *message* is the JSON text of an object, a mapping, or an instance of a model of a
        :class:`~strands_trio.StrandsApp` that is *sender*.

        Returns:
            The room's epoch and the message's offset, or ``None`` if it was not kept.

        Raises:
            TypeError: *message* is not a JSON object (text, mapping or model).
            HistoryUnavailable: the store could not keep it (the message is not sent).
            NotConnectedError: as the sender's ``send_room_message``: the message is kept,
                and reaches the room's clients when they recover.
        """
        text = self._text(sender, message)
        if self._rooms is not None and not self._rooms(room_id):
            kept = False
        elif self._types is None:
            kept = True
        else:
            kept = _type_of(text, self.type_field) in self._types
        if not kept:
            self._counts["passed"] += 1
            await sender.send_room_message(room_id, text, wait=wait)
            return None
        try:
            position = await self.store.append(room_id, text)
        except HistoryUnavailable:
            self._counts["store_errors"] += 1
            raise
        self._counts["kept"] += 1
        encoded = self._json.get(room_id)
        if encoded is None:
            encoded = self._json[room_id] = room_json(room_id)
        await sender.send_room_message(
            room_id, stamp(text, encoded, position.offset, position.epoch), wait=wait
        )
        return position

    @staticmethod
    def _text(sender: Sender, message: object) -> str:
        if type(message) is str:
            if message[:1] != "{" or (message[-1] != "}" and message.rstrip()[-1:] != "}"):
                raise TypeError(f"a kept room message must be a JSON object, got {message[:40]!r}")
            return message
        if isinstance(message, Mapping):
            return orjson.dumps(message).decode()
        router = getattr(sender, "router", None)
        if router is None or not attrs.has(type(message)):
            raise TypeError(
                f"message must be JSON text, a mapping or a model of the app, got {message!r}"
            )
        text: str = router.encode(message)
        return text

    # ------------------------------------------------------------------ recovering

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is _MESSAGE:
            message = ctx.get_args()[1]
            if RECOVER in message:  # a substring test first: most messages are not ones
                try:
                    data = orjson.loads(message)
                except orjson.JSONDecodeError:
                    data = None
                if type(data) is dict and data.get(self.type_field) == RECOVER:
                    ctx.outcome = "recover"
                    await self._recover(ctx, data.get("rooms"))
                    return
        await call_next(ctx)

    async def _recover(self, ctx: ExecutionContext, asked: object) -> None:
        counts = self._counts
        counts["recovers"] += 1
        client = ctx.get_client()
        client_id = ctx.client_id
        answer: dict[str, dict[str, Any]] = {}
        missed: list[tuple[int, str]] = []  # a room's messages to replay
        if type(asked) is not dict:
            counts["invalid"] += 1
            logger.debug("history: client %s sent a recover without rooms", client_id)
            asked = {}
        for n, (room, where) in enumerate(asked.items()):
            answer[room] = entry = await self._recover_room(ctx, n, room, where, missed)
            for offset, text in missed:
                stamped = stamp(text, room_json(room), offset, entry["epoch"])
                await client.send_private_message(client_id, stamped)
                counts["replayed"] += 1
            missed.clear()
            counts["recovered" if entry["recovered"] else "not_recovered"] += 1
        reply = orjson.dumps({self.type_field: RECOVERED, "rooms": answer}).decode()
        await client.send_private_message(client_id, reply)

    async def _recover_room(
        self, ctx: ExecutionContext, n: int, room: str, where: object, missed: list[tuple[int, str]]
    ) -> dict[str, Any]:
        """The answer for one room; its messages to replay are put in *missed*."""

        def refused(reason: str) -> dict[str, Any]:
            return {"recovered": False, "epoch": "", "offset": 0, "reason": reason}

        if n >= self.max_rooms:
            return refused("too_many")
        epoch = where.get("epoch") if type(where) is dict else None
        offset = where.get("offset") if type(where) is dict else None
        if type(epoch) is not str or type(offset) is not int or offset < 0:
            self._counts["invalid"] += 1
            logger.debug("history: client %s sent a bad recover entry for %r", ctx.client_id, room)
            return refused("invalid")
        if self._rooms is not None and not self._rooms(room):
            return refused("not_kept")
        allowed = self._can_recover(ctx, room)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            return refused("forbidden")
        try:
            since = await self.store.since(room, epoch, offset)
        except HistoryUnavailable:
            self._counts["store_errors"] += 1
            logger.warning("history: the store could not replay room %r", room, exc_info=True)
            return refused("unavailable")
        entry: dict[str, Any] = {
            "recovered": since.recovered,
            "epoch": since.epoch,
            "offset": since.offset,
        }
        if since.recovered:
            missed.extend(since.messages)
        else:
            entry["reason"] = since.reason
        return entry

    def statistics(self) -> HistoryStatistics:
        """What this middleware has counted so far."""
        return HistoryStatistics(**self._counts)


def _type_of(text: str, field: str) -> object:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return data.get(field) if type(data) is dict else None
