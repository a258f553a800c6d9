"""Room history benchmark: what keeping room messages costs, and how fast a replay is.

    python benchmarks/history.py            # about half a minute (needs redis-server)
    python benchmarks/history.py --quick    # seconds

In one process, under ``trio.run``, with no broker: the sender encodes each action as the
client's engine does (``encode_message_to_room``) and drops it.

- **Send path**: ``await sender.send_room_message(room, text)`` alone, against
  ``await history.send_room_message(sender, room, text)`` with a :class:`MemoryHistory` (all
  types kept, and only some types kept, which parses each message); best of several runs, in
  microseconds per message, and the extra cost over no history (target: under 2 µs).
- **Redis**: appends per second through one :class:`RedisHistory` (one backend, one
  connection, pipelined by *tasks* concurrent senders) to a ``redis-server`` of its own.
- **Replay**: the time a History takes to answer a ``strands.recover`` for 1,000 missed
  messages (the store's answer, stamping, 1,000 private sends and the answer), with each store.

Prints a table; ``--plot`` draws the send path and the replays as bars.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio
from _common import IMAGES, Options, bars, note, pyplot, redis_server, save_figure

from strands_trio.middleware import History, HistoryStore, MemoryHistory, RedisHistory
from strands_trio.protocol import encode_message_to_connection, encode_message_to_room
from strands_trio.redis import open_live_redis
from strands_trio.testing import MiddlewareHarness

TEXT = '{"type":"chat.said","user":"ann","text":"a message of a typical length, said in a room"}'


class Sender:
    """Encodes each action as the engine does, then drops it."""

    async def send_room_message(self, room_id: str, message: str, *, wait: bool = False) -> None:
        encode_message_to_room("r1", room_id, message)

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        encode_message_to_connection("r1", client_id, message)


async def send_loop(history: History | None, count: int) -> float:
    """Microseconds per message sent to one of 100 rooms."""
    sender = Sender()
    rooms = [f"room-{n}" for n in range(100)]
    start = time.perf_counter()
    if history is None:
        for n in range(count):
            await sender.send_room_message(rooms[n % 100], TEXT)
    else:
        for n in range(count):
            await history.send_room_message(sender, rooms[n % 100], TEXT)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / count * 1e6


def send_path(count: int, repeat: int) -> dict[str, float]:
    contenders: dict[str, Any] = {
        "no history": lambda: None,
        "MemoryHistory, all types": lambda: History(store=MemoryHistory(size=100)),
        "MemoryHistory, types={...}": lambda: History(
            store=MemoryHistory(size=100), types={"chat.said"}
        ),
    }
    results = {}
    for name, make in contenders.items():
        results[name] = min(trio.run(send_loop, make(), count) for _ in range(repeat))
        note(f"  {name}: {results[name]:.2f} µs")
    return results


async def replay_once(store: HistoryStore, missed: int) -> float:
    """Seconds to answer a recover for *missed* messages (appended first, not timed)."""
    history = History(store=store, can_recover=lambda ctx, room: True)
    sender = Sender()
    first = None
    for _ in range(missed + 1):
        position = await history.send_room_message(sender, "replayed", TEXT)  # type: ignore[arg-type]
        first = first or position
    assert first is not None
    harness = MiddlewareHarness([history])
    ask = {"type": "strands.recover", "rooms": {"replayed": {"epoch": first.epoch, "offset": 1}}}
    text = json.dumps(ask)
    start = time.perf_counter()
    await harness.message(text, client_id="ann", room_id="replayed")
    took = time.perf_counter() - start
    sent = harness.sent
    assert len(sent) == missed + 1, len(sent)
    assert '"recovered":true' in sent[-1][1], sent[-1]
    return took


async def redis_part(
    port: int, count: int, tasks: int, missed: int, repeat: int
) -> dict[str, float]:
    async with open_live_redis(f"redis://127.0.0.1:{port}") as live:
        await live.wait_available()
        store = RedisHistory(live, size=missed + 10)
        sender = Sender()
        history = History(store=store)

        async def worker(n: int) -> None:
            for i in range(count // tasks):
                await history.send_room_message(sender, f"room-{(n + i) % 100}", TEXT)  # type: ignore[arg-type]

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for n in range(tasks):
                nursery.start_soon(worker, n)
        rate = count // tasks * tasks / (time.perf_counter() - start)
        replays = []
        for _ in range(repeat):
            await live.execute("FLUSHALL")
            replays.append(await replay_once(RedisHistory(live, size=missed + 10), missed))
        return {"rate": rate, "replay": min(replays)}


def main() -> None:
    options = Options(__doc__, quick="20k messages, 2 runs")
    options.add_mode("--messages", full=200_000, quick=20_000, type=int, help="per run")
    options.add_mode("--repeat", full=5, quick=2, type=int, help="runs per figure (best kept)")
    options.add("--tasks", type=int, default=64, help="concurrent senders on Redis")
    options.add("--missed", type=int, default=1000, help="messages replayed")
    options.add_plot(IMAGES / "history.png")
    args = options.parse()

    note("send path, in memory")
    send = send_path(args.messages, args.repeat)
    note("replay, in memory")
    memory_replay = min(
        trio.run(replay_once, MemoryHistory(size=args.missed + 10), args.missed)
        for _ in range(args.repeat)
    )
    note("Redis")
    with redis_server() as port:
        redis = trio.run(redis_part, port, args.messages // 4, args.tasks, args.missed, args.repeat)

    bare = send["no history"]
    print(f"\nSend path: {args.messages:,} room messages, best of {args.repeat}, µs per message")
    print(f"{'sender':32s} {'µs/message':>11s} {'+ over none':>12s}")
    for name, value in send.items():
        print(f"{name:32s} {value:11.2f} {value - bare:12.2f}")
    print(f"\nRedisHistory: {redis['rate']:,.0f} messages/s per backend ({args.tasks} senders)")
    print(f"\nReplay of {args.missed:,} missed messages, best of {args.repeat}")
    print(f"{'store':32s} {'ms':>11s}")
    print(f"{'MemoryHistory':32s} {memory_replay * 1e3:11.2f}")
    print(f"{'RedisHistory':32s} {redis['replay'] * 1e3:11.2f}")
    if args.plot:
        plot(args.plot, send, memory_replay, redis["replay"], args.missed)


def plot(path: Path, send: dict[str, float], memory: float, redis: float, missed: int) -> None:
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4.2))
    bars(top, list(send), [[v] for v in send.values()], [f"{v:.2f} µs" for v in send.values()])
    top.set_xlabel("µs per room message sent (in process, no broker)")
    replays = {"MemoryHistory": memory * 1e3, "RedisHistory": redis * 1e3}
    bars(
        bottom,
        list(replays),
        [[v] for v in replays.values()],
        [f"{v:.1f} ms" for v in replays.values()],
        color="#dd8452",
    )
    bottom.set_xlabel(f"ms to replay {missed:,} missed messages")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
