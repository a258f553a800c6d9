"""Small helpers shared by the trio-facing modules."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import trio

__all__ = ["collapse_single_exception", "running", "serve_until_signal"]


@contextlib.contextmanager
def collapse_single_exception() -> Iterator[None]:
    """Re-raise an exception group that holds one exception (after dropping ``Cancelled``
    ones) as that exception.

    For ``async with`` helpers that hide a nursery: an error from the block or from the one
    task behind it reaches the caller as itself, so ``except SomeError`` works. A group of
    several real errors is left alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        real = group.split(trio.Cancelled)[1]
        if real is not None and len(real.exceptions) == 1:
            inner = real.exceptions[0]
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            if not isinstance(inner, BaseExceptionGroup):
                # Keeps the inner exception's own cause; hides the group it came in.
                raise inner from inner.__cause__
        raise


@contextlib.asynccontextmanager
async def running(start: Callable[..., Awaitable[Any]]) -> AsyncIterator[Any]:
    """Run ``start`` (a ``task_status``-taking async function) in a nursery for the length of
    the block, entered once it has started; yields what it passed to ``started()``.

    Leaving the block cancels it. Errors from the block or from the task reach the caller as
    themselves (see :func:`collapse_single_exception`).
    """
    with collapse_single_exception():
        async with trio.open_nursery() as nursery:
            value = await nursery.start(start)
            try:
                yield value
            finally:
                nursery.cancel_scope.cancel()


async def serve_until_signal(
    start: Callable[..., Awaitable[Any]],
    logger: logging.Logger,
    on_started: Callable[[Any], None] | None = None,
) -> None:
    """Run ``start`` (a ``task_status``-taking async function) until SIGINT or SIGTERM, then
    cancel it (a graceful shutdown, for the things this library runs) and return.

    The signal receiver is open before ``start`` runs, so a signal during a slow start (a
    backend waiting for its broker) stops it too; ``on_started`` gets what ``start`` passed to
    ``task_status.started()``. A second signal during the shutdown interrupts it at once
    (``KeyboardInterrupt``). Errors from ``start`` propagate as themselves.
    """

    async def run() -> None:
        async with trio.open_nursery() as inner:
            value = await inner.start(start)
            if on_started is not None:
                on_started(value)

    with collapse_single_exception():
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                nursery.start_soon(run)
                async for signum in signals:
                    logger.info("%s received: shutting down", signal.Signals(signum).name)
                    break
            # The receiver is closed: a second Ctrl-C now interrupts the shutdown.
            nursery.cancel_scope.cancel()
