"""A :class:`~strands_trio.middleware.RedisPresence`'s side of its
:class:`~strands_trio.redis.Membership` (the rounds that keep its liveness key and members in
Redis), kept apart from the store for the store's module to stay readable."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._presence_redis import RedisPresence

__all__ = ["Rounds"]


class Rounds:
    """A :class:`RedisPresence`'s side of its :class:`~strands_trio.redis.Membership`: the
    steps of a round (``Registrations``) and the writes between rounds (``PendingWrites``)."""

    __slots__ = ("_store",)

    def __init__(self, store: RedisPresence) -> None:
        self._store = store

    async def renew(self) -> bool:
        return await self._store._renew()

    async def resync(self) -> int:
        return self._store._resync()

    async def sweep(self) -> int:
        store = self._store
        reaped: int = await store._scripts.sweep(store._redis, args=[store.prefix])
        return reaped

    @property
    def pending(self) -> bool:
        store = self._store
        return bool(store._dirty or store._inflight or store._drops)

    async def flush(self) -> None:
        await self._store._flush()
