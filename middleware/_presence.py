"""The presence middleware: who is in which room, from the connection events.

Theory of operation. :class:`Presence` watches three kinds of event and lets every event
through, unchanged:

- ``new_connection``: the client is recorded as a :class:`Member` of its room, *before* the
  handler runs, so that a handler that greets the newcomer with the list of who is here finds
  them in it; and because the broker accepted the client before this event, a handler that
  fails does not make the client any less connected.
- ``disconnected``: the client is removed, also before the handler, so that a handler saying
  goodbye to the room counts the leaver out.
- ``new_message`` from a client the store does not know: the client is recorded again
  ("self-healing"). A backend that restarted, or that the broker moved a client to, never gets
  that client's ``new_connection``; its first message puts it back. Checking costs a dict
  lookup per message.

Everything else (connection requests, broker errors) passes straight through. The store does
the recording synchronously, in memory, so the middleware never waits and never fails an
event: a store that raises anyway is logged and counted, and the event goes on.

Where the members live is a :class:`PresenceStore`: :class:`MemoryPresence` for one backend
process, :class:`~strands_trio.middleware.RedisPresence` for several replicas sharing one view
(which writes to Redis from a task of its own). Handlers ask the middleware (or the store):
``await presence.members(room)``, ``await presence.count(room)``, ``await presence.rooms()``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import orjson
import trio

from strands_trio import CallNext, EventType, ExecutionContext, StrandsError

__all__ = [
    "Member",
    "MemoryPresence",
    "MemoryPresenceStatistics",
    "Presence",
    "PresenceStatistics",
    "PresenceStore",
    "PresenceUnavailable",
    "default_instance_id",
]

logger = logging.getLogger("strands_trio.middleware.presence")

# An enum member is an attribute look-up on every access (slow on CPython 3.11): hot paths
# use these.
_MESSAGE = EventType.MESSAGE
_NEW_CONNECTION = EventType.NEW_CONNECTION
_DISCONNECT = EventType.DISCONNECT

#: Computes one field of a member from the ``new_connection`` (or healing message) event:
#: the same functions as the rate limit's keys (``by_identity``, ``by_metadata("name")`` ...);
#: ``None`` leaves the field out.
FieldFunction = Callable[[ExecutionContext], str | None]


class PresenceUnavailable(StrandsError):
    """A presence query could not be answered: the store's backing service (Redis) is
    unreachable. Recording goes on meanwhile; only queries fail."""


def default_instance_id() -> str:
    """A name for this backend process that no other process, before or after, has:
    ``"<host>-<pid>-<8 random hex digits>"``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _sort_key(member: Member) -> tuple[float, str]:
    return (member.joined_at, member.client_id)


@attrs.frozen(kw_only=True)
class Member:
    """A WebSocket client in a room, as a presence store recorded it.

    Attributes:
        client_id: The client's id.
        room: Its room.
        instance: The backend instance that recorded it (its store's ``instance_id``), not a
            broker node: a backend's events do not say which broker node a client is on.
        joined_at: When that instance recorded it, in seconds since the epoch
            (:func:`time.time`, comparable across machines with synchronised clocks). For a
            member put back by self-healing, when it was put back.
        fields: What the middleware's ``fields`` functions computed (the user's name ...).
    """

    client_id: str
    room: str
    instance: str
    joined_at: float
    fields: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def to_json(self) -> bytes:
        """The member as a JSON object (how :class:`RedisPresence` stores it)."""
        return orjson.dumps(
            {
                "client_id": self.client_id,
                "room": self.room,
                "instance": self.instance,
                "joined_at": self.joined_at,
                "fields": dict(self.fields),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Member:
        """Read a member written by :meth:`to_json`.

        Raises:
            ValueError: *data* is not such an object; the message says what is wrong.
        """
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"a member is a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"a member is a JSON object, got {type(value).__name__}")
        for name in ("client_id", "room", "instance"):
            if not isinstance(value.get(name), str):
                raise ValueError(f"a member's {name} must be a string @ $.{name}")
        joined_at = value.get("joined_at")
        if isinstance(joined_at, bool) or not isinstance(joined_at, int | float):
            raise ValueError("a member's joined_at must be a number @ $.joined_at")
        fields = value.get("fields", {})
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise ValueError("a member's fields must map names to strings @ $.fields")
        return cls(
            client_id=value["client_id"],
            room=value["room"],
            instance=value["instance"],
            joined_at=float(joined_at),
            fields=fields,
        )


@runtime_checkable
class PresenceStore(Protocol):
    """Where :class:`Presence` keeps members.

    The recording methods are synchronous and must not block or raise for an unreachable
    service: a store that writes elsewhere queues the change for a task of its own (see
    :class:`~strands_trio.middleware.RedisPresence`), so that an event never waits for it.
    """

    #: This backend instance's name, recorded in each :class:`Member` it makes.
    instance_id: str

    def join(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        """Record that *client_id* is in *room* (replacing what was known of it)."""

    def leave(self, client_id: str, room: str) -> None:
        """Record that *client_id* left *room*."""

    def knows(self, client_id: str, room: str) -> bool:
        """Whether this instance knows *client_id* is in *room*: called on every message,
        so it must be a lookup in memory."""

    def heal(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        """Record a client whose ``new_connection`` this instance never saw (it sent a
        message, and :meth:`knows` said no)."""

    async def members(self, room: str) -> list[Member]:
        """The members of *room*, oldest first.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """

    async def count(self, room: str) -> int:
        """How many members *room* has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """

    async def rooms(self) -> dict[str, int]:
        """Every room with at least one member, and how many it has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """


@attrs.frozen(kw_only=True)
class MemoryPresenceStatistics:
    """A snapshot of a :class:`MemoryPresence` (:meth:`MemoryPresence.statistics`).

    Attributes:
        members: Clients recorded now.
        rooms: Rooms with at least one member.
    """

    members: int
    rooms: int


class MemoryPresence:
    """Members in this process's memory: the store for a single backend process.

    Args:
        instance_id: This process's name in each :class:`Member`
            (:func:`default_instance_id` by default).

    Queries never wait and never fail; the ``*_nowait`` forms answer synchronously.
    """

    def __init__(self, *, instance_id: str | None = None) -> None:
        self.instance_id = _check_instance_id(instance_id)
        self._clients: dict[str, Member] = {}
        self._rooms: dict[str, dict[str, Member]] = {}

    def __repr__(self) -> str:
        return f"<MemoryPresence {self.instance_id!r}: {len(self._clients)} members>"

    def join(self, client_id: str, room: str, fields: Mapping[str, str]) -> None:
        self._remove(client_id)
        member = Member(
            client_id=client_id,
            room=room,
            instance=self.instance_id,
            joined_at=time.time(),
            fields=fields,
        )
        self._clients[client_id] = member
        self._rooms.setdefault(room, {})[client_id] = member

    heal = join

    def leave(self, client_id: str, room: str) -> None:
        if self.knows(client_id, room):  # not a late leave of a connection to another room
            self._remove(client_id)

    def _remove(self, client_id: str) -> None:
        member = self._clients.pop(client_id, None)
        if member is not None:
            room = self._rooms[member.room]
            del room[client_id]
            if not room:
                del self._rooms[member.room]

    def knows(self, client_id: str, room: str) -> bool:
        member = self._clients.get(client_id)
        return member is not None and member.room == room

    def members_nowait(self, room: str) -> list[Member]:
        """The members of *room*, oldest first."""
        return sorted(self._rooms.get(room, {}).values(), key=_sort_key)

    def rooms_nowait(self) -> dict[str, int]:
        """Every room with members, and how many."""
        return {room: len(members) for room, members in self._rooms.items()}

    async def members(self, room: str) -> list[Member]:
        await trio.lowlevel.checkpoint()
        return self.members_nowait(room)

    async def count(self, room: str) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._rooms.get(room, ()))

    async def rooms(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return self.rooms_nowait()

    def statistics(self) -> MemoryPresenceStatistics:
        """How many members and rooms there are now."""
        return MemoryPresenceStatistics(members=len(self._clients), rooms=len(self._rooms))


def _check_instance_id(value: str | None) -> str:
    if value is None:
        return default_instance_id()
    if not isinstance(value, str) or not value:
        raise ValueError(f"instance_id must be a non-empty string, got {value!r}")
    return value


def check_seconds(name: str, value: Any, minimum: float) -> float:
    """*value* as a float, if it is a finite number of seconds of at least *minimum*.

    Raises:
        TypeError: it is not a number.
        ValueError: it is below *minimum*, or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (minimum <= value < math.inf):
        raise ValueError(f"{name} must be at least {minimum:g} s and finite, got {value!r}")
    return float(value)


@attrs.frozen(kw_only=True)
class PresenceStatistics:
    """What a :class:`Presence` middleware has counted (:meth:`Presence.statistics`).

    Attributes:
        joined: ``new_connection`` events recorded.
        left: ``disconnected`` events recorded.
        healed: Messages from clients the store did not know, handed to it to record again.
        store_errors: Calls into the store that raised (logged; the event went on).
    """

    joined: int
    left: int
    healed: int
    store_errors: int


class _Counters:
    def __init__(self) -> None:
        self.joined = self.left = self.healed = self.store_errors = 0


def _check_store(_: Any, __: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, PresenceStore):
        raise TypeError(
            "store must be a presence store (MemoryPresence(), RedisPresence(...), or an "
            f"object with join, leave, knows, heal, members, count and rooms), got {value!r}"
        )


def _to_fields(value: Mapping[str, FieldFunction]) -> tuple[tuple[str, FieldFunction], ...]:
    if not isinstance(value, Mapping):
        raise TypeError(f"fields must map names to functions (ctx) -> str | None, got {value!r}")
    for name, fn in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a field's name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise TypeError(f"fields[{name!r}] must be a function (ctx) -> str | None, got {fn!r}")
    return tuple(value.items())


@attrs.frozen(kw_only=True)
class Presence:
    """Track who is in which room, from ``new_connection`` and ``disconnected`` events::

        presence = Presence(fields={"user": by_identity})
        app = StrandsApp(middleware=[Auth(...), presence])

        @app.on_new_connection
        async def joined(context: Context) -> None:
            names = [m.fields.get("user", "?") for m in await presence.members(context.room_id)]

    Put it in the app's list, not on one handler: it must see every connection event. List
    it after :class:`Auth` if a field reads the identity (the functions run on the
    ``new_connection`` event, whose metadata carries it).

    Args:
        store: Where members live: a fresh :class:`MemoryPresence` by default, or a
            :class:`~strands_trio.middleware.RedisPresence` shared by backend replicas.
        fields: Name to function of the event, kept in :attr:`Member.fields`; a function
            returning ``None`` leaves its field out.
        heal: Record again a client that sends a message while the store does not know it
            (see the module docstring). On by default.

    Raises:
        TypeError: *store* is not a presence store, or a field is not a function.
        ValueError: a field's name is empty.
    """

    store: PresenceStore = attrs.field(factory=MemoryPresence, validator=_check_store)
    fields: tuple[tuple[str, FieldFunction], ...] = attrs.field(factory=dict, converter=_to_fields)
    heal: bool = True
    _counters: _Counters = attrs.field(factory=_Counters, init=False, eq=False, repr=False)

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        kind = ctx.get_type()
        if kind is _MESSAGE:
            if self.heal:
                context = ctx.context
                if not self.store.knows(context.client_id, context.room_id):
                    self._record(ctx, healing=True)
        elif kind is _NEW_CONNECTION:
            self._record(ctx, healing=False)
        elif kind is _DISCONNECT:
            context = ctx.context
            try:
                self.store.leave(context.client_id, context.room_id)
                self._counters.left += 1
            except Exception:
                self._store_failed(ctx)
        await call_next(ctx)

    def _record(self, ctx: ExecutionContext, *, healing: bool) -> None:
        context = ctx.context
        try:
            fields = {}
            for name, fn in self.fields:
                value = fn(ctx)
                if value is not None:
                    fields[name] = value
            if healing:
                self.store.heal(context.client_id, context.room_id, fields)
                self._counters.healed += 1
            else:
                self.store.join(context.client_id, context.room_id, fields)
                self._counters.joined += 1
        except Exception:
            self._store_failed(ctx)

    def _store_failed(self, ctx: ExecutionContext) -> None:
        self._counters.store_errors += 1
        logger.exception(
            "presence: recording the %s of client %s failed; the event goes on",
            ctx.get_type().value,
            ctx.client_id,
        )

    async def members(self, room: str) -> list[Member]:
        """The members of *room*, oldest first (see :meth:`PresenceStore.members`).

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """
        return await self.store.members(room)

    async def count(self, room: str) -> int:
        """How many members *room* has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """
        return await self.store.count(room)

    async def rooms(self) -> dict[str, int]:
        """Every room with members, and how many each has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """
        return await self.store.rooms()

    def statistics(self) -> PresenceStatistics:
        """What this middleware has counted so far (the store has its own
        ``statistics()``)."""
        c = self._counters
        return PresenceStatistics(
            joined=c.joined, left=c.left, healed=c.healed, store_errors=c.store_errors
        )
