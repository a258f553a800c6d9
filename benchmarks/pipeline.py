"""Pipeline micro-benchmark: what each layer costs per event, in one process.

    python benchmarks/pipeline.py            # about half a minute
    python benchmarks/pipeline.py --quick    # seconds

Calls a client's ``new_message`` job in a loop under ``trio.run`` (no socket, no broker), for
a bare client and for clients with a pipeline: empty, one and five no-op middleware, each
built-in middleware alone (Logging at a disabled and at an enabled level, Auth on events of
an authenticated connection, RateLimit per client, Timeout, Metrics, Presence in memory with
and without healing, for clients it already knows) and the stack of the
replay benchmark (Logging off + Auth + RateLimit). 100 clients take turns, as in the replay
benchmark. Each figure is the best of several runs, in microseconds per event, with the
difference to the bare client. Prints a table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio
from _backends import auth, never, noop, rate_limit
from _common import Options, note

from strands_trio import Context, StrandsClient
from strands_trio.protocol import NewMessage


class Silent(StrandsClient):
    """A client whose handler does nothing: there is no broker to answer."""

    async def on_message(self, message: str, context: Context) -> None:
        pass


def contenders() -> dict[str, Callable[[], dict[str, Any]]]:
    """Name -> the keyword arguments of a client, made fresh for each run."""
    from prometheus_client import CollectorRegistry

    from strands_trio.middleware import Logging, MemoryPresence, Metrics, Presence, Timeout

    def presence(heal: bool) -> Any:
        store = MemoryPresence()
        for n in range(100):  # the clients of events(), as if their new_connection came
            store.join(f"client-{n}", "bench", {})
        return Presence(store=store, heal=heal)

    return {
        "bare client": dict,
        "pipeline, nothing in it": lambda: {"exception_handlers": [never]},
        "1 no-op middleware": lambda: {"middleware": [noop]},
        "5 no-op middleware": lambda: {"middleware": [noop] * 5},
        "Logging, level disabled": lambda: {"middleware": [Logging("bench.off")]},
        "Logging, level enabled": lambda: {"middleware": [Logging("bench.on")]},
        "Auth (authenticated events)": lambda: {"middleware": [auth()]},
        "RateLimit (per client)": lambda: {"middleware": [rate_limit()]},
        "Timeout": lambda: {"middleware": [Timeout(5)]},
        "Metrics": lambda: {"middleware": [Metrics(CollectorRegistry())]},
        "Presence (memory)": lambda: {"middleware": [presence(heal=True)]},
        "Presence (memory, heal=False)": lambda: {"middleware": [presence(heal=False)]},
        "Logging (off) + Auth + RateLimit": lambda: {
            "middleware": [Logging("bench.off"), auth(), rate_limit()]
        },
    }


def events() -> list[NewMessage]:
    identity = {"subject": "", "roles": ["member"], "claims": {}}
    return [
        NewMessage(
            request_id="r",
            context=Context(
                client_id=f"client-{n}",
                room_id="bench",
                metadata={"user": f"client-{n}", "identity": {**identity, "subject": f"c{n}"}},
            ),
            message=f"message number {n}",
        )
        for n in range(100)
    ]


async def per_event(kwargs: dict[str, Any], count: int) -> float:
    job = Silent(**kwargs)._jobs().message
    batch = events()
    for n in range(1000):  # warm-up
        await job(batch[n % 100])
    start = time.perf_counter()
    for n in range(count):
        await job(batch[n % 100])
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    options = Options(__doc__, quick="20k events, 2 runs")
    options.add_mode("--events", full=100_000, quick=20_000, type=int, help="events per run")
    options.add_mode("--repeat", full=5, quick=2, type=int, help="runs per figure (best kept)")
    args = options.parse()
    logging.getLogger("bench.off").setLevel(logging.WARNING)
    on = logging.getLogger("bench.on")
    on.setLevel(logging.INFO)
    on.addHandler(logging.NullHandler())  # records are made and handled, then dropped
    on.propagate = False

    results: dict[str, float] = {}
    for name, make in contenders().items():
        best = min(trio.run(per_event, make(), args.events) for _ in range(args.repeat))
        results[name] = best
        note(f"  {name}: {best:.2f} us")
    bare = results["bare client"]
    print(f"\nOne new_message job, {args.events:,} events, best of {args.repeat}, µs per event")
    print(f"{'client':36s} {'µs/event':>9s} {'+ over bare':>12s}")
    for name, value in results.items():
        print(f"{name:36s} {value:9.2f} {value - bare:12.2f}")


if __name__ == "__main__":
    main()
