"""A keyed dispatcher: jobs with the same key run one at a time, in order; jobs with different
keys run concurrently, up to a limit.

Theory of operation: each key with work has a deque of jobs in ``_queues``; a key is in the
``_ready`` deque from the moment its first job arrives until a worker takes it. A worker takes
a ready key and runs that key's jobs until its deque is empty, then removes the key. So at
most one worker runs a key's jobs at any time, in the order they were submitted, and a key
that keeps receiving jobs while it runs does not need to be scheduled again.

Workers are long-lived tasks in the dispatcher's nursery, started lazily up to
``max_concurrency``. Each is *idle* (parked, nothing ready), *free* (between jobs, about to look
at ``_ready``) or *busy* (inside a job). The invariant is: whenever ``_ready`` is not empty,
some worker is free, unless all ``max_concurrency`` workers are busy. ``submit`` and a worker
that starts a job restore it by waking an idle worker or starting a new one, but only when no
worker is free: under a steady load one or two workers loop over the ready keys and no task
switch is spent per job. A job is called directly (``await fn(arg)``), with no task or cancel
scope of its own; a worker yields to the scheduler every ``_YIELD_EVERY`` jobs so the reader
and the writer keep running.

``submit`` never blocks. Each job has a size (the bytes its argument holds: an event's message);
the producer checks :attr:`full`, true at ``max_pending`` jobs or ``max_pending_bytes`` bytes,
and awaits :meth:`wait_for_space`, which returns once the backlog is down to half of both
limits (hysteresis, so a producer is not woken for every job).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio

__all__ = ["KeyedDispatcher"]

Job = Callable[[Any], Awaitable[object]]
ErrorCallback = Callable[[Job, Any, Exception], None]

_YIELD_EVERY = 64


class KeyedDispatcher:
    """Run ``await fn(arg)`` jobs, serially per key and concurrently across keys.

    Args:
        max_concurrency: Jobs running at once (hence workers).
        max_pending: Jobs submitted and not finished at which :attr:`full` is true.
        max_pending_bytes: The same, in the sizes given to :meth:`submit`.
        on_error: Called with ``(fn, arg, exc)`` when a job raises an :class:`Exception`; the
            worker then goes on with the next job. Other exceptions (cancellation) propagate.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_pending: int,
        max_pending_bytes: int = 1 << 62,
        on_error: ErrorCallback,
    ) -> None:
        self._max_workers = max_concurrency
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._low_water = max_pending // 2
        self._low_bytes = max_pending_bytes // 2
        self._on_error = on_error
        self._queues: dict[Hashable, deque[tuple[Job, Any, int]]] = {}
        self._ready: deque[Hashable] = deque()
        self._pending = 0
        self._bytes = 0
        self._workers = 0
        self._free = 0
        self._idle = 0
        self._idle_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._closed_event = trio.Event()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished (queued or running)."""
        return self._pending

    @property
    def running(self) -> int:
        """Jobs running now."""
        return self._workers - self._free - self._idle

    @property
    def pending_bytes(self) -> int:
        """The sizes of the jobs submitted and not yet finished."""
        return self._bytes

    @property
    def full(self) -> bool:
        """Whether the backlog has reached ``max_pending`` jobs or ``max_pending_bytes``."""
        return self._pending >= self._max_pending or self._bytes >= self._max_bytes

    def submit(self, key: Hashable | None, fn: Job, arg: Any, size: int = 0) -> None:
        """Queue ``fn(arg)`` after the jobs already queued for *key*; ``None`` means a key of
        its own (no ordering with any other job). *size* counts against ``max_pending_bytes``
        until the job is done.

        Raises:
            RuntimeError: the dispatcher is not running or was closed.
        """
        if self._nursery is None or self._closed:
            raise RuntimeError("the dispatcher is not running")
        self._pending += 1
        self._bytes += size
        if key is None:
            key = object()
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque(((fn, arg, size),))
            self._ready.append(key)
            if not self._free:
                self._wake_worker()
        else:
            queue.append((fn, arg, size))

    def _has_space(self) -> bool:
        return self._pending <= self._low_water and self._bytes <= self._low_bytes

    async def wait_for_space(self) -> None:
        """Wait until the backlog is down to half of ``max_pending`` and of
        ``max_pending_bytes``."""
        while not self._has_space() and not self._closed:
            await self._space_lot.park()

    async def wait_drained(self) -> None:
        """Wait until no job is queued or running."""
        while self._pending:
            await self._drained_lot.park()

    def close(self) -> None:
        """Accept no more jobs; :meth:`run` returns once the queued ones are done."""
        self._closed = True
        self._closed_event.set()
        self._space_lot.unpark_all()
        self._free += self._idle
        self._idle = 0
        self._idle_lot.unpark_all()

    def dropped(self) -> int:
        """Jobs queued and not started (what a hard stop loses)."""
        return sum(len(queue) for queue in self._queues.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until :meth:`close` was called and every queued job is done.

        Cancellation: cancelling this cancels the running jobs; jobs not started are lost
        (see :meth:`dropped`).
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._closed_event.wait()

    def _wake_worker(self) -> None:
        if self._idle:
            self._idle -= 1
            self._free += 1
            self._idle_lot.unpark()
        elif self._workers < self._max_workers:
            assert self._nursery is not None
            self._workers += 1
            self._free += 1
            self._nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        ready = self._ready
        since_yield = 0
        while True:
            if not ready:
                if self._closed:
                    self._free -= 1
                    self._workers -= 1
                    return
                self._free -= 1
                self._idle += 1
                await self._idle_lot.park()  # whoever unparks us counts us as free
                since_yield = 0
                continue
            key = ready.popleft()
            queue = self._queues[key]
            self._free -= 1
            if ready and not self._free:
                self._wake_worker()
            while queue:
                fn, arg, size = queue.popleft()
                try:
                    await fn(arg)
                except Exception as exc:
                    self._on_error(fn, arg, exc)
                self._pending -= 1
                self._bytes -= size
                if self._pending <= self._low_water and self._bytes <= self._low_bytes:
                    if self._space_lot:
                        self._space_lot.unpark_all()
                    if not self._pending and self._drained_lot:
                        self._drained_lot.unpark_all()
                since_yield += 1
                if since_yield >= _YIELD_EVERY:
                    since_yield = 0
                    await trio.lowlevel.checkpoint()
            del self._queues[key]
            self._free += 1
