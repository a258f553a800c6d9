"""The backends ready for events, taken in turn, and the wait for their number to change."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ._ports import BackendPort

__all__ = ["BackendSet"]


class BackendSet:
    """The hub's ready backends: connection requests and clients without one go to the next
    in turn (round robin).

    Args:
        on_change: Called with the new number of backends whenever it changes.
    """

    def __init__(self, on_change: Callable[[int], None]) -> None:
        self._backends: list[BackendPort] = []
        self._turn = 0
        self._changed = trio.Event()
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._backends)

    def next(self) -> BackendPort | None:
        """The next backend in turn, or ``None`` if there is none."""
        backends = self._backends
        if not backends:
            return None
        self._turn = (self._turn + 1) % len(backends)
        return backends[self._turn]

    def add(self, backend: BackendPort) -> None:
        """*backend* is ready."""
        self._backends.append(backend)
        self._notify()

    def discard(self, backend: BackendPort) -> None:
        """*backend* left (nothing if it was not there)."""
        if backend in self._backends:
            self._backends.remove(backend)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._on_change(len(self._backends))

    async def wait_for(self, count: int) -> None:
        """Return once exactly *count* backends are ready."""
        while len(self._backends) != count:
            await self._changed.wait()

    async def wait_changed(self) -> None:
        """Return at the next change."""
        await self._changed.wait()
