"""Where the presence middleware keeps members: the :class:`Member` record, the
:class:`PresenceStore` protocol and the store of one process, :class:`MemoryPresence`.

Theory of operation. A store records synchronously (``join``, ``leave``, ``heal``, and
``knows`` on every message), so that the middleware never waits and never fails an event; it
answers queries (``members``, ``count``, ``rooms``) asynchronously, since a shared store asks
another service. :class:`MemoryPresence` keeps three dicts, client to the member of its
connect-time room, client to the members of the rooms it joined (``join_room``, a
:class:`MultiRoomStore`'s), and room to its members, which it updates together; a client's
``leave`` (its disconnection) takes it out of all its rooms, and a room without members is
dropped. :class:`~strands_trio.middleware.RedisPresence` (``_presence_redis.py``)
keeps the same view in Redis for several replicas.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs
import orjson
import trio

from strands_trio import StrandsError

__all__ = [
    "BrokerAwareStore",
    "Member",
    "MemoryPresence",
    "MemoryPresenceStatistics",
    "MultiRoomStore",
    "PresenceStore",
    "PresenceUnavailable",
    "default_instance_id",
]


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
        broker: The name of the broker link it was learnt through (the broker's ``hello``
            name, or a name of the backend's own for a broker that sent none); ``""`` if
            none was announced.
        broker_instance: Which instance of that broker (or which link to a broker that sent
            no ``hello``): when a link comes up to the same broker with another instance,
            the member is dropped (see :meth:`BrokerAwareStore.through`).
    """

    client_id: str
    room: str
    instance: str
    joined_at: float
    fields: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    broker: str = ""
    broker_instance: str = ""

    def to_json(self) -> bytes:
        """The member as a JSON object (how :class:`RedisPresence` stores it)."""
        return orjson.dumps(
            {
                "client_id": self.client_id,
                "room": self.room,
                "instance": self.instance,
                "joined_at": self.joined_at,
                "fields": dict(self.fields),
                "broker": self.broker,
                "broker_instance": self.broker_instance,
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
        via = value.get("broker", ""), value.get("broker_instance", "")
        if not isinstance(via[0], str) or not isinstance(via[1], str):
            raise ValueError("a member's broker and broker_instance must be strings @ $.broker")
        return cls(
            broker=via[0],
            broker_instance=via[1],
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


@runtime_checkable
class BrokerAwareStore(Protocol):
    """A :class:`PresenceStore` that records through which broker link each member was
    learnt, and drops the members of a broker that restarted. Both stores of this package
    are; :class:`Presence` tells one of each link that comes up."""

    def through(self, broker: str, instance: str) -> int:
        """Record members learnt from now on as learnt through *broker*, *instance*; drop
        the members learnt through *broker* with another instance (the broker restarted:
        those clients are gone). Returns how many members this process dropped (a shared
        store also removes those of other processes, later, counted in its statistics).
        Must not block, as recording."""


@runtime_checkable
class MultiRoomStore(Protocol):
    """A :class:`PresenceStore` that records the rooms a client joins besides its
    connect-time room (``join_room`` of the client or app, through :class:`Presence`). Both
    stores of this package are. Its ``leave`` (the client's disconnection) then takes the
    client out of every room; ``members`` of a joined room lists it, with that room as
    :attr:`Member.room`."""

    def join_room(self, client_id: str, room: str) -> None:
        """Record that *client_id* joined *room* too (nothing if it is in it). Must not
        block, as recording."""

    def leave_room(self, client_id: str, room: str) -> None:
        """Record that *client_id* left *room*, a room it had joined. Must not block."""


@attrs.frozen(kw_only=True)
class MemoryPresenceStatistics:
    """A snapshot of a :class:`MemoryPresence` (:meth:`MemoryPresence.statistics`).

    Attributes:
        members: Clients recorded now.
        rooms: Rooms with at least one member.
        memberships: Room memberships: one per client and room it is in.
    """

    members: int
    rooms: int
    memberships: int = 0


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
        self._joined: dict[str, dict[str, Member]] = {}  # client -> joined room -> member
        self._rooms: dict[str, dict[str, Member]] = {}
        self._via = ("", "")

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
            broker=self._via[0],
            broker_instance=self._via[1],
        )
        self._clients[client_id] = member
        self._rooms.setdefault(room, {})[client_id] = member

    heal = join

    def leave(self, client_id: str, room: str) -> None:
        if self.knows(client_id, room) or (  # not a late leave of a connection elsewhere
            client_id not in self._clients and client_id in self._joined
        ):
            self._remove(client_id)

    def _remove(self, client_id: str) -> None:
        member = self._clients.pop(client_id, None)
        if member is not None:
            self._out_of(member.room, client_id)
        for room in self._joined.pop(client_id, ()):
            self._out_of(room, client_id)

    def _out_of(self, room_id: str, client_id: str) -> None:
        room = self._rooms[room_id]
        del room[client_id]
        if not room:
            del self._rooms[room_id]

    def join_room(self, client_id: str, room: str) -> None:
        home = self._clients.get(client_id)
        joined = self._joined.get(client_id)
        if (home is not None and home.room == room) or (joined is not None and room in joined):
            return
        member = Member(
            client_id=client_id,
            room=room,
            instance=self.instance_id,
            joined_at=time.time(),
            fields=home.fields if home is not None else {},
            broker=self._via[0],
            broker_instance=self._via[1],
        )
        self._joined.setdefault(client_id, {})[room] = member
        self._rooms.setdefault(room, {})[client_id] = member

    def leave_room(self, client_id: str, room: str) -> None:
        joined = self._joined.get(client_id)
        if joined is None or joined.pop(room, None) is None:
            return
        if not joined:
            del self._joined[client_id]
        self._out_of(room, client_id)

    def through(self, broker: str, instance: str) -> int:
        self._via = (broker, instance)
        gone = [
            m.client_id
            for m in self._clients.values()
            if m.broker == broker and m.broker_instance != instance
        ]
        gone += [  # clients known only from their joined rooms
            client_id
            for client_id, rooms in self._joined.items()
            if client_id not in self._clients
            and any(m.broker == broker and m.broker_instance != instance for m in rooms.values())
        ]
        for client_id in gone:
            self._remove(client_id)
        return len(gone)

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
        return MemoryPresenceStatistics(
            members=len(self._clients),
            rooms=len(self._rooms),
            memberships=sum(len(members) for members in self._rooms.values()),
        )


def _check_instance_id(value: str | None) -> str:
    if value is None:
        return default_instance_id()
    if not isinstance(value, str) or not value:
        raise ValueError(f"instance_id must be a non-empty string, got {value!r}")
    return value
