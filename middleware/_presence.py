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

Everything else (connection requests, broker errors) passes straight through.

*Many rooms.* ``await app.join_room(client_id, room)`` (and ``leave_room``, on the client or
the app) tells every middleware that is a :class:`~strands_trio.RoomListener` once the action
is sent: :meth:`Presence.on_room_change` records it in a :class:`MultiRoomStore` (both stores
of this package are), so :meth:`Presence.members` of a joined room lists the client, and its
``disconnected`` takes it out of every room. Only the joins made through this process's app
are known here (or, with :class:`~strands_trio.middleware.RedisPresence`, through any replica
sharing the store); a ``disconnected`` from strands-trio's broker lists every room the client
was in (``rooms``), and each is left, whichever replica joined it.

*When the broker restarts.* Its clients are gone, and no ``disconnected`` ever comes for them.
:meth:`Presence.on_broker_link` hears each link that comes up (``_brokers.py``) and tells the
store (:meth:`BrokerAwareStore.through`), which records every member with the link it was
learnt through and drops the members learnt through the same broker name with another
instance. A reconnection to the same instance keeps them (our broker keeps its clients while
a backend reconnects). A broker that sends no ``hello`` (the reference) cannot say whether it
restarted: each new link then counts as a new instance of a broker of this process's own, so
the members learnt through the previous link are dropped, and live clients come back (heal)
at their next message. The store does
the recording synchronously, in memory, so the middleware never waits and never fails an
event: a store that raises anyway is logged and counted, and the event goes on.

Where the members live is a :class:`PresenceStore` (``_presence_store.py``):
:class:`MemoryPresence` for one backend process, :class:`~strands_trio.middleware.RedisPresence`
for several replicas sharing one view (which writes to Redis from a task of its own). Handlers
ask the middleware (or the store): ``await presence.members(room)``, ``await
presence.count(room)``, ``await presence.rooms()``.

The arguments are a frozen, validated :class:`PresenceConfig` (``presence.config``); the
counters live in the middleware, and :meth:`Presence.from_config` makes another middleware
from a config with counters (and, unless the config names a store, a memory store) of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import attrs
from attrs.validators import instance_of, optional

from strands_trio import BrokerLink, CallNext, EventType, ExecutionContext

from ._presence_store import (
    BrokerAwareStore,
    Member,
    MemoryPresence,
    MultiRoomStore,
    PresenceStore,
)

__all__ = ["Presence", "PresenceConfig", "PresenceStatistics"]

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

_NO_FIELDS: Final[Mapping[str, FieldFunction]] = MappingProxyType({})


@attrs.frozen(kw_only=True)
class PresenceStatistics:
    """What a :class:`Presence` middleware has counted (:meth:`Presence.statistics`).

    Attributes:
        joined: ``new_connection`` events recorded.
        left: ``disconnected`` events recorded.
        healed: Messages from clients the store did not know, handed to it to record again.
        store_errors: Calls into the store that raised (logged; the event went on).
        dropped: Members dropped because the broker they were learnt through restarted (or,
            for a broker that sends no ``hello``, because the link they came through ended).
        restarts: Links that came up to a broker instance other than the last one seen of
            that name (or, without ``hello``, new links after the first).
        rooms_joined: Joins of another room (``join_room``) recorded.
        rooms_left: Leaves of a joined room (``leave_room``) recorded.
    """

    joined: int
    left: int
    healed: int
    store_errors: int
    dropped: int
    restarts: int
    rooms_joined: int = 0
    rooms_left: int = 0


def _to_fields(value: Mapping[str, FieldFunction]) -> Mapping[str, FieldFunction]:
    # A converter rather than attrs.validators.deep_mapping, whose messages do not say which
    # field is wrong. A read-only copy, so that the caller's dict cannot change the config.
    if not isinstance(value, Mapping):
        raise TypeError(f"fields must map names to functions (ctx) -> str | None, got {value!r}")
    for name, fn in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a field's name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise TypeError(f"fields[{name!r}] must be a function (ctx) -> str | None, got {fn!r}")
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class PresenceConfig:
    """Where a :class:`Presence` records members, and what it records; validated when made.

    The arguments of :class:`Presence`, as a record: ``attrs.evolve(presence.config, ...)``
    makes another, and :meth:`Presence.from_config` a middleware with counters of its own.

    Attributes:
        store: Where members live; ``None`` for a :class:`MemoryPresence` of each
            middleware's own.
        fields: Name to function of the event (a read-only mapping).
        heal: Whether a message from a client the store does not know records it again.

    Raises:
        TypeError: *store* is not a presence store, a field is not a function, or *heal* is
            not a bool.
        ValueError: a field's name is empty.
    """

    store: PresenceStore | None = attrs.field(
        # A runtime-checkable Protocol: isinstance() checks that its members are there.
        default=None,
        validator=optional(instance_of(PresenceStore)),  # type: ignore[type-abstract]
    )
    fields: Mapping[str, FieldFunction] = attrs.field(
        factory=dict, converter=_to_fields, hash=False
    )
    heal: bool = attrs.field(default=True, validator=instance_of(bool))


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

    Attributes:
        config: The arguments, frozen and validated (:class:`PresenceConfig`).

    Raises:
        TypeError: *store* is not a presence store, a field is not a function, or *heal* is
            not a bool.
        ValueError: a field's name is empty.
    """

    __slots__ = (
        "_dropped",
        "_fields",
        "_heal",
        "_healed",
        "_joined",
        "_knows",
        "_left",
        "_restarts",
        "_rooms_joined",
        "_rooms_left",
        "_seen",
        "_store",
        "_store_errors",
        "config",
    )

    def __init__(
        self,
        *,
        store: PresenceStore | None = None,
        fields: Mapping[str, FieldFunction] = _NO_FIELDS,
        heal: bool = True,
    ) -> None:
        self._start(PresenceConfig(store=store, fields=fields, heal=heal))

    @classmethod
    def from_config(cls, config: PresenceConfig) -> Presence:
        """A middleware configured by *config*, with counters (and, if *config* names no
        store, a memory store) of its own.

        Raises:
            TypeError: *config* is not a :class:`PresenceConfig`.
        """
        if not isinstance(config, PresenceConfig):
            raise TypeError(f"config must be a PresenceConfig, got {config!r}")
        presence = cls.__new__(cls)
        presence._start(config)
        return presence

    def _start(self, config: PresenceConfig) -> None:
        self.config = config
        self._store: PresenceStore = MemoryPresence() if config.store is None else config.store
        # Copied into slots: the hot path reads them once per event.
        self._fields = tuple(config.fields.items())
        self._heal = config.heal
        self._knows = self._store.knows
        self._joined = self._left = self._healed = self._store_errors = 0
        self._dropped = self._restarts = self._rooms_joined = self._rooms_left = 0
        self._seen: dict[str, str] = {}  # broker name -> the last instance seen

    def __repr__(self) -> str:
        return f"<Presence {self.config!r}>"

    @property
    def store(self) -> PresenceStore:
        """The store members live in, the configured one or this middleware's own
        :class:`MemoryPresence`."""
        return self._store

    @property
    def fields(self) -> Mapping[str, FieldFunction]:
        """Name to function of the event (from :attr:`config`)."""
        return self.config.fields

    @property
    def heal(self) -> bool:
        """Whether unknown clients are recorded again from their messages (from
        :attr:`config`)."""
        return self._heal

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        kind = ctx.get_type()
        if kind is _MESSAGE:
            if self._heal:
                context = ctx.context
                if not self._knows(context.client_id, context.room_id):
                    self._record(ctx, healing=True)
        elif kind is _NEW_CONNECTION:
            self._record(ctx, healing=False)
        elif kind is _DISCONNECT:
            context = ctx.context
            try:
                self._store.leave(context.client_id, context.room_id)
                self._left += 1
                rooms = getattr(ctx.get_args()[0], "rooms", None)  # our broker lists them
                if rooms and len(rooms) > 1 and isinstance(self._store, MultiRoomStore):
                    for room in rooms[1:]:  # joined, maybe through another replica
                        self._store.leave_room(context.client_id, room)
            except Exception:
                self._store_failed(ctx)
        await call_next(ctx)

    def _record(self, ctx: ExecutionContext, *, healing: bool) -> None:
        context = ctx.context
        try:
            fields = {}
            for name, fn in self._fields:
                value = fn(ctx)
                if value is not None:
                    fields[name] = value
            if healing:
                self._store.heal(context.client_id, context.room_id, fields)
                self._healed += 1
            else:
                self._store.join(context.client_id, context.room_id, fields)
                self._joined += 1
        except Exception:
            self._store_failed(ctx)

    def on_broker_link(self, link: BrokerLink) -> None:
        """Told by the app when a link to the broker comes up (or goes down: nothing to do):
        the store drops the members of a broker instance that is gone (see the module
        docstring). Logged at INFO with the count when any were dropped."""
        if not link.up:
            return
        store = self._store
        if not isinstance(store, BrokerAwareStore):
            return
        if link.identity is not None:
            broker, instance = link.identity.name, link.identity.instance
        else:  # no hello: only this process's own previous links can be known gone
            broker, instance = f"{link.where} from {store.instance_id}", str(link.number)
        previous = self._seen.get(broker)
        self._seen[broker] = instance
        try:
            dropped = store.through(broker, instance)
        except Exception:
            self._store_errors += 1
            logger.exception("presence: telling the store of the link to %s failed", broker)
            return
        if previous is not None and previous != instance:
            self._restarts += 1
        self._dropped += dropped
        if dropped:
            logger.info(
                "presence: dropped %d member(s) learnt through broker %s before %s",
                dropped,
                broker,
                "it restarted" if link.identity is not None else "its link was lost",
            )

    def on_room_change(self, client_id: str, room_id: str, joined: bool) -> None:
        """Told by the app when it made a client join (*joined*) or leave a room: recorded
        in the store if it is a :class:`MultiRoomStore` (a store that is not is logged once
        per call at WARNING and counted as a store error)."""
        store = self._store
        try:
            if not isinstance(store, MultiRoomStore):
                raise TypeError(f"{store!r} does not record joined rooms (no join_room)")
            if joined:
                store.join_room(client_id, room_id)
                self._rooms_joined += 1
            else:
                store.leave_room(client_id, room_id)
                self._rooms_left += 1
        except Exception:
            self._store_errors += 1
            logger.warning(
                "presence: recording that client %s %s room %r failed; going on",
                client_id,
                "joined" if joined else "left",
                room_id,
                exc_info=True,
            )

    def _store_failed(self, ctx: ExecutionContext) -> None:
        self._store_errors += 1
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
        return await self._store.members(room)

    async def count(self, room: str) -> int:
        """How many members *room* has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """
        return await self._store.count(room)

    async def rooms(self) -> dict[str, int]:
        """Every room with members, and how many each has.

        Raises:
            PresenceUnavailable: the store cannot answer now.
        """
        return await self._store.rooms()

    def statistics(self) -> PresenceStatistics:
        """What this middleware has counted so far (the store has its own
        ``statistics()``)."""
        return PresenceStatistics(
            joined=self._joined,
            left=self._left,
            healed=self._healed,
            store_errors=self._store_errors,
            dropped=self._dropped,
            restarts=self._restarts,
            rooms_joined=self._rooms_joined,
            rooms_left=self._rooms_left,
        )
