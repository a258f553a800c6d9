"""Rate-limit store micro-benchmark: what one hit costs, against the ``limits`` library.

    python benchmarks/ratelimit.py            # full run (about two minutes)
    python benchmarks/ratelimit.py --quick    # a smoke run (seconds)

Every contender enforces the same limit, 100 hits per second per key (``limits``' "100/second";
for us ``Rate(per_second=100, burst=100)``), in two scenarios:

- *hot key*: one key hit in a tight loop, a client flooding: nearly every hit is refused;
- *10,000 keys*: keys hit in turn, each about once every 10 ms: nearly every hit is allowed.

Contenders: ``MemoryStore.delay_nowait`` (what the middleware calls: the decision as a float),
``MemoryStore.hit_nowait`` (the same with a ``Decision`` record), ``MemoryStore.hit`` (the
async protocol method, a Trio checkpoint per hit, run under ``trio.run``), and ``limits``'
``MovingWindowRateLimiter`` and ``FixedWindowRateLimiter`` on its ``MemoryStorage``, when
``limits`` is installed. Every contender reads a clock per hit (``limits`` calls
``time.time()`` itself; we pass ``time.monotonic()``), and ``limits`` builds its key from the
identifier per hit, as its API does. Each figure is the best of several runs, in microseconds
per hit. Then two probes: whether ``limits``' memory storage starts threads, and whether its
async API runs under Trio.

Then ``RedisStore.hit`` (one Lua script per hit, Redis's clock) over loopback, on a
``redis-server`` this script starts on a free port (``_common.redis_server``, as
``benchmarks/redis_client.py`` does): one hit after the other, and from 10 and 100 tasks
sharing the connection (their scripts pipelined), in microseconds per hit (wall time over hits),
with fewer hits per run (``--redis-hits``); and, one after the other in interleaved runs, a
``PING``, the script called directly and ``RedisStore.hit``, to tell the round trip, the script
and the per-hit deadline apart. Skipped, with the reason printed, without ``redis-server`` or
``hiredis``.

Prints a table and writes a PNG plot (``--plot``) of the in-process rows (the Redis rows, a
hundred times longer, would flatten them).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import trio
from _common import IMAGES, Options, bars, best_of, note, pyplot, redis_server, save_figure

from strands_trio.middleware._ratelimit_store import MemoryStore, Rate

KEYS = 10_000
RATE = Rate(per_second=100, burst=100)

Loop = Callable[[list[str]], object]


def per_hit(loop: Loop, keys: list[str], repeat: int) -> float:
    """Microseconds per hit of the best of *repeat* runs of *loop* over *keys*."""
    return best_of(repeat, lambda: loop(keys)) / len(keys) * 1e6


def ours_nowait(store: MemoryStore) -> Loop:
    def run(keys: list[str]) -> None:
        hit, rate, clock = store.hit_nowait, RATE, time.monotonic
        for key in keys:
            hit(key, rate, clock())

    return run


def ours_delay(store: MemoryStore) -> Loop:
    def run(keys: list[str]) -> None:
        delay, rate, clock = store.delay_nowait, RATE, time.monotonic
        for key in keys:
            delay(key, rate, clock())

    return run


def ours_async(store: MemoryStore) -> Loop:
    async def main(keys: list[str]) -> None:
        hit, rate, clock = store.hit, RATE, time.monotonic
        for key in keys:
            await hit(key, rate, clock())

    def run(keys: list[str]) -> None:
        trio.run(main, keys)

    return run


#: The Redis rows: how many tasks share the connection.
REDIS_TASKS = {
    "RedisStore.hit (loopback)": 1,
    "RedisStore.hit, 10 tasks": 10,
    "RedisStore.hit, 100 tasks": 100,
}


def redis_unavailable() -> str | None:
    """Why the Redis rows cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    if find_spec("hiredis") is None:
        return "No module named 'hiredis' (pip install 'strands-trio[redis]')"
    return None


async def redis_hits(store: Any, keys: list[str]) -> None:
    hit, rate = store.hit, RATE
    for key in keys:
        await hit(key, rate)


async def round_trips(live: Any, repeat: int) -> dict[str, float]:
    """One after the other, best of *repeat* interleaved runs of 1,000 calls: a ``PING``, the
    GCRA script called directly, and ``RedisStore.hit``, which adds the per-hit deadline."""
    from strands_trio.middleware import RedisStore
    from strands_trio.middleware._ratelimit_redis import _GCRA

    store = RedisStore(live, timeout=10)
    interval = int(RATE.interval * 2**20)
    calls = {
        "PING": lambda: live.execute("PING"),
        "the script by EVALSHA": lambda: _GCRA(
            live, keys=["strands:rl:hot"], args=[interval, (RATE.burst - 1) * interval]
        ),
        "RedisStore.hit": lambda: store.hit("hot", RATE),
    }
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(1000):
                await call()
            best[name] = min(best[name], (time.perf_counter() - start) / 1000 * 1e6)
    return best


async def redis_figures(
    port: int, scenarios: dict[str, list[str]], repeat: int
) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Microseconds per hit for each (scenario, Redis row), best of *repeat* runs, and the
    round trips of :func:`round_trips`."""
    from strands_trio.middleware import RedisStore
    from strands_trio.redis import open_live_redis

    figures: dict[tuple[str, str], float] = {}
    async with open_live_redis(f"redis://127.0.0.1:{port}") as live:
        await live.wait_available()
        trips = await round_trips(live, repeat)
        for scenario, keys in scenarios.items():
            for how, tasks in REDIS_TASKS.items():
                best = float("inf")
                for _ in range(repeat):
                    await live.execute("FLUSHALL")
                    store = RedisStore(live, timeout=10)
                    start = time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for n in range(tasks):
                            nursery.start_soon(redis_hits, store, keys[n::tasks])
                    best = min(best, time.perf_counter() - start)
                    stats = store.statistics()
                    assert stats.redis_hits == len(keys), stats
                figures[scenario, how] = best / len(keys) * 1e6
                note(f"  {scenario}: {how} {figures[scenario, how]:.1f} us")
    return figures, trips


def limits_loops() -> dict[str, Callable[[], Loop]] | None:
    try:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
    except ImportError:
        return None
    item = RateLimitItemPerSecond(100)

    def make(strategy: type[MovingWindowRateLimiter | FixedWindowRateLimiter]) -> Loop:
        hit = strategy(MemoryStorage()).hit

        def run(keys: list[str]) -> None:
            for key in keys:
                hit(item, key)

        return run

    return {
        "limits MovingWindow (MemoryStorage)": lambda: make(MovingWindowRateLimiter),
        "limits FixedWindow (MemoryStorage)": lambda: make(FixedWindowRateLimiter),
    }


def probe_limits_threads(seconds: float) -> str:
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    before = threading.active_count()
    storage = MemoryStorage()
    after = threading.active_count()
    starts = 0
    original = threading.Timer.start

    def counting_start(timer: threading.Timer) -> None:
        nonlocal starts
        starts += 1
        original(timer)

    threading.Timer.start = counting_start  # type: ignore[method-assign, assignment]
    try:
        limiter, item = MovingWindowRateLimiter(storage), RateLimitItemPerSecond(100)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            limiter.hit(item, "hot")
    finally:
        threading.Timer.start = original  # type: ignore[method-assign]
    return (
        f"limits MemoryStorage(): threads {before} -> {after} on construction; "
        f"{starts} more timer threads started during {seconds:g} s of hits "
        "(ours: none, ever)"
    )


def probe_limits_async_under_trio() -> str:
    from limits import RateLimitItemPerSecond
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    async def main() -> bool:
        limiter = MovingWindowRateLimiter(MemoryStorage())
        return await limiter.hit(RateLimitItemPerSecond(100), "hot")

    with warnings.catch_warnings():
        # The coroutine it failed to schedule is never awaited: not our warning to show.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            trio.run(main)
        except Exception as exc:
            return f"limits.aio under trio.run: fails with {type(exc).__name__}: {exc}"
        finally:
            gc.collect()
    return "limits.aio under trio.run: works"


def plot(rows: list[tuple[str, str, float, float]], args: argparse.Namespace) -> None:
    fig, ax = pyplot().subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    labels = [f"{scenario}: {how}" for scenario, how, _, _ in rows]
    colors = ["#c44e52" if how.startswith("limits") else "#55a868" for _, how, _, _ in rows]
    values = [[value] for _, _, value, _ in rows]
    texts = [f"{value:.2f} ({ratio:.1f}x)" for _, _, value, ratio in rows]
    bars(ax, labels, values, texts, color=colors, room=1.35)
    ax.set_xlabel("microseconds per hit, best of runs (ratio to delay_nowait)")
    ax.set_title("Rate limiting, 100 hits/s per key: cost of one hit", fontsize=10)
    save_figure(fig, args.plot)


def main() -> None:
    options = Options(__doc__, quick="50k hits (2k on Redis), 2 runs")
    options.add_mode("--hits", full=500_000, quick=50_000, type=int, help="hits per timed run")
    options.add_mode("--repeat", full=7, quick=2, type=int, help="runs per figure (best kept)")
    options.add_plot(IMAGES / "ratelimit.png")
    options.add_mode(
        "--redis-hits", full=20_000, quick=2_000, type=int, help="hits per timed run on Redis"
    )
    args = options.parse()

    store = MemoryStore()  # the baseline's, for the share of hits allowed
    contenders: dict[str, Callable[[], Loop]] = {
        "MemoryStore.delay_nowait": lambda: ours_delay(store),
        "MemoryStore.hit_nowait": lambda: ours_nowait(MemoryStore()),
        "MemoryStore.hit (async)": lambda: ours_async(MemoryStore()),
    }
    theirs = limits_loops()
    if theirs is None:
        print("limits is not installed: its rows are skipped (pip install limits)")
    else:
        contenders |= theirs
    # The probes first, while no other thread runs.
    probes = []
    if theirs is not None:
        probes = [probe_limits_threads(0.5), probe_limits_async_under_trio()]
    names = [f"k{n}" for n in range(KEYS)]
    scenarios = {
        "hot key": ["hot"] * args.hits,
        f"{KEYS:,} keys": [names[n % KEYS] for n in range(args.hits)],
    }

    rows: list[tuple[str, str, float, float]] = []
    allowed: dict[str, float] = {}
    for scenario, keys in scenarios.items():
        store = MemoryStore()
        baseline = None
        for how, make in contenders.items():
            note(f"  {scenario}: {how} ...", end="")
            value = per_hit(make(), keys, args.repeat)
            note(f" {value:.2f} us")
            baseline = baseline or value
            rows.append((scenario, how, value, value / baseline))
        stats = store.statistics()
        allowed[scenario] = stats.allowed / stats.hits
    plotted = list(rows)

    no_redis = redis_unavailable()
    trips = None
    if no_redis is None:
        with redis_server() as port:
            on_redis = {name: keys[: args.redis_hits] for name, keys in scenarios.items()}
            figures, trips = trio.run(redis_figures, port, on_redis, args.repeat)
        for scenario in scenarios:
            baseline = next(value for s, _, value, _ in rows if s == scenario)
            at = max(i for i, row in enumerate(rows) if row[0] == scenario) + 1
            rows[at:at] = [
                (scenario, how, figures[scenario, how], figures[scenario, how] / baseline)
                for how in REDIS_TASKS
            ]

    print(
        f"\nRate limiting, 100 hits/s per key: {args.hits:,} hits per run, best of "
        f"{args.repeat}, microseconds per hit"
    )
    print(f"{'scenario':12s} {'how':36s} {'us/hit':>7s} {'x delay':>9s}")
    for scenario, how, value, ratio in rows:
        print(f"{scenario:12s} {how:36s} {value:7.2f} {ratio:9.1f}")
    for scenario, share in allowed.items():
        print(f"{scenario}: {share:.2%} of MemoryStore's hits allowed")
    for line in probes:
        print(line)
    if trips is None:
        print(f"RedisStore rows skipped: {no_redis}")
    else:
        shown = ", ".join(f"{name} {value:.1f}" for name, value in trips.items())
        print(f"RedisStore rows: {args.redis_hits:,} hits per run")
        print(f"One after the other, best of {args.repeat} runs of 1,000, us: {shown}")

    plot(plotted, args)


if __name__ == "__main__":
    main()
