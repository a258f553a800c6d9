"""KeyedDispatcher: one key's jobs run in order and never overlap; different keys overlap up
to the limit; the backlog bound is reported; errors are handed over and work goes on."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from strands_trio._dispatch import KeyedDispatcher


class Recorder:
    def __init__(self) -> None:
        self.errors: list[tuple[Any, Exception]] = []

    def on_error(self, fn: Any, arg: Any, exc: Exception) -> None:
        self.errors.append((arg, exc))


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def dispatcher(recorder: Recorder) -> AsyncIterator[KeyedDispatcher]:
    dispatcher = KeyedDispatcher(max_concurrency=4, max_pending=8, on_error=recorder.on_error)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher
        nursery.cancel_scope.cancel()


async def test_per_key_order_and_cross_key_concurrency(
    dispatcher: KeyedDispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    """Jobs of a key run one at a time in submission order, however long each takes, while
    up to max_concurrency keys run at once."""
    rng = random.Random(1)
    seen: defaultdict[str, list[int]] = defaultdict(list)
    running: set[str] = set()
    peak = 0

    async def job(arg: tuple[str, int, float]) -> None:
        nonlocal peak
        key, number, delay = arg
        assert key not in running  # never two jobs of a key at once
        running.add(key)
        peak = max(peak, len(running))
        await trio.sleep(delay)
        seen[key].append(number)
        running.discard(key)

    for number in range(40):
        key = f"client-{number % 6}"
        dispatcher.submit(key, job, (key, number, rng.random()))
        if dispatcher.full:
            await dispatcher.wait_for_space()
    await dispatcher.wait_drained()
    assert all(numbers == sorted(numbers) for numbers in seen.values())
    assert sum(map(len, seen.values())) == 40
    assert peak == 4


async def test_a_slow_key_does_not_block_others(
    dispatcher: KeyedDispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    """While one key's job sleeps for an hour, other keys' jobs finish at once."""
    done: list[str] = []

    async def job(arg: tuple[str, float]) -> None:
        await trio.sleep(arg[1])
        done.append(arg[0])

    dispatcher.submit("slow", job, ("slow", 3600))
    for name in "abc":
        dispatcher.submit(name, job, (name, 0))
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(done) == ["a", "b", "c"]
    assert dispatcher.running == 1
    assert trio.current_time() == 0


async def test_backlog_bound_and_hysteresis(dispatcher: KeyedDispatcher) -> None:
    """full is set at max_pending; wait_for_space returns once half of it is left."""
    gate = trio.Event()

    async def job(_: object) -> None:
        await gate.wait()

    for number in range(8):
        dispatcher.submit(number % 2, job, None)
    assert dispatcher.full
    assert dispatcher.pending == 8
    async with trio.open_nursery() as nursery:
        woke = trio.Event()

        async def waiter() -> None:
            await dispatcher.wait_for_space()
            woke.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        gate.set()
        await woke.wait()
    assert dispatcher.pending <= 4


async def test_errors_are_reported_and_work_goes_on(
    dispatcher: KeyedDispatcher, recorder: Recorder
) -> None:
    """A job that raises is handed to on_error; the key's next job still runs."""
    ran: list[int] = []

    async def job(number: int) -> None:
        if number == 1:
            raise ValueError("boom")
        ran.append(number)

    for number in range(3):
        dispatcher.submit("k", job, number)
    await dispatcher.wait_drained()
    assert ran == [0, 2]
    assert [(arg, str(exc)) for arg, exc in recorder.errors] == [(1, "boom")]


async def test_none_key_means_no_ordering(
    dispatcher: KeyedDispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    """Jobs submitted with key None run concurrently with each other."""
    finished: list[float] = []

    async def job(_: object) -> None:
        await trio.sleep(1)
        finished.append(trio.current_time())

    for _ in range(3):
        dispatcher.submit(None, job, None)
    await dispatcher.wait_drained()
    assert finished == [1, 1, 1]


async def test_close_runs_what_is_queued_then_run_returns(recorder: Recorder) -> None:
    """After close(), queued jobs still run, then run() returns; submit is refused."""
    dispatcher = KeyedDispatcher(max_concurrency=2, max_pending=8, on_error=recorder.on_error)
    ran: list[int] = []

    async def job(number: int) -> None:
        await trio.lowlevel.checkpoint()
        ran.append(number)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            for number in range(5):
                dispatcher.submit("k", job, number)
            dispatcher.close()
            with pytest.raises(RuntimeError, match="not running"):
                dispatcher.submit("k", job, 99)
    assert ran == [0, 1, 2, 3, 4]
    assert dispatcher.dropped() == 0


async def test_cancelled_run_reports_dropped_jobs(recorder: Recorder) -> None:
    """Cancelling run() cancels running jobs; the ones not started are counted as dropped."""
    dispatcher = KeyedDispatcher(max_concurrency=1, max_pending=8, on_error=recorder.on_error)

    async def job(_: object) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            for _ in range(3):
                dispatcher.submit("k", job, None)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert dispatcher.dropped() == 2
