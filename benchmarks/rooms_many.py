"""Many rooms: room message delivery through the broker's hub with clients in 1, 5 and 20 rooms
each, side by side in one run; and what emulating rooms with private messages would cost.

    python benchmarks/rooms_many.py            # full run (about half a minute)
    python benchmarks/rooms_many.py --quick    # a smoke run

What it measures: the broker's own work for room messages, in one process and without
sockets, so that the figure is the hub's and not the kernel's (``fanout.py`` measures the
whole path, sockets and clients included, with one room). A :class:`~strands_trio.broker.Hub`
holds ``--clients`` clients whose links only count what they are handed (as the WebSocket
link would queue a frame); each client is in its connect-time room and has joined rooms
(``join_room``) until it is in K of the ``--rooms`` rooms, K = 1, 5 and 20, so a room has
``clients x K / rooms`` members. A batch of ``message_to_room`` lines, one per room in turn, is
decoded as the backends' port decodes it (``FrameDecoder``) and carried out
(``Hub.on_actions``); the result is deliveries per second (a client handed a message), the
best of ``--repeat`` batches, and the cost per delivery.

The ``emulated`` rows price the other way to give a client several rooms, the one a backend
would need on the reference broker (``docs/rooms.md``): the backend keeps the memberships and
sends one ``message_to_connection`` per member. Each row counts the backend's encoding of
those frames (``encode_message_to_connection``) and the broker's decoding and delivery.

The setup also measures the joins: ``join_room`` actions per second through the same path,
and the hub's memory per joined room (``tracemalloc``: the hub's, beyond K=1's, divided by
the joins).

Prints progress on stderr, a table on stdout, and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections.abc import Callable
from typing import Any

import attrs
from _common import RESULTS, Machine, Options, bars, best_of, note, pyplot, save_figure

from strands_trio.broker import Admission, BrokerConfig, Delivery, Hub
from strands_trio.protocol import (
    FrameDecoder,
    Role,
    encode,
    encode_message_to_connection,
    encode_message_to_room,
)
from strands_trio.protocol import JoinRoom as JoinRoomFrame

KS = (1, 5, 20)


class CountingLink:
    """A client's link that only counts what it is handed (the WebSocket link frames once per
    message and queues it)."""

    __slots__ = ("delivered",)

    def __init__(self) -> None:
        self.delivered = 0

    def deliver(self, message: Delivery) -> bool:
        self.delivered += 1
        return True

    def flush(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


@attrs.frozen
class Row:
    """One line of the table."""

    label: str
    rooms_per_client: int
    members_per_room: float
    deliveries_per_s: float
    ns_per_delivery: float


def make_hub(clients: int, rooms: int, k: int) -> tuple[Hub, list[CountingLink], float]:
    """A hub of *clients* clients, each in *k* of *rooms* rooms; and the seconds the joins
    took, per join (nan for k = 1)."""
    hub = Hub(BrokerConfig(ws_port=0, tcp_port=0, heartbeat_interval=None))
    links = []
    for i in range(clients):
        link = CountingLink()
        links.append(link)
        admission = Admission(accepted=True, client_id=f"c{i}", room_id=f"r{i % rooms}")
        hub.connect(admission, link)
    lines = b"".join(
        encode(JoinRoomFrame(request_id="j", conn_id=f"c{i}", room_id=f"r{(i + j) % rooms}"))
        for i in range(clients)
        for j in range(1, k)
    )
    decoder = FrameDecoder(Role.BROKER)
    start = _now()
    hub.on_actions(None, decoder.feed(lines))  # type: ignore[arg-type]
    took = _now() - start
    joins = clients * (k - 1)
    return hub, links, (took / joins if joins else float("nan"))


def _now() -> float:
    import time

    return time.perf_counter()


def room_batch(rooms: int, messages: int) -> bytes:
    """*messages* ``message_to_room`` lines, one room after the other."""
    return b"".join(
        encode_message_to_room(f"m{n}", f"r{n % rooms}", '{"type":"chat","text":"hello"}')
        for n in range(messages)
    )


def measure(hub: Hub, links: list[CountingLink], run: Callable[[], Any], repeat: int) -> float:
    """Deliveries per second of *run*, the best of *repeat*."""
    before = sum(link.delivered for link in links)
    run()
    per_run = sum(link.delivered for link in links) - before
    gc.collect()
    seconds = best_of(repeat, run)
    return per_run / seconds


def run_setup(args: Any, k: int) -> tuple[list[Row], float, float]:
    """The rows of one K, the seconds per join, and the bytes the hub holds after the
    joins."""
    gc.collect()
    tracemalloc.start()
    hub, links, per_join = make_hub(args.clients, args.rooms, k)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    members = args.clients * k / args.rooms
    batch = room_batch(args.rooms, args.messages)

    def by_room() -> None:
        decoder = FrameDecoder(Role.BROKER)
        hub.on_actions(None, decoder.feed(batch))  # type: ignore[arg-type]

    rows = []
    rate = measure(hub, links, by_room, args.repeat)
    rows.append(Row(f"room, K={k}", k, members, rate, 1e9 / rate))
    if k in args.emulate:
        # Who is in each room, as the emulating backend would keep it.
        rooms: dict[str, list[str]] = {}
        for i in range(args.clients):
            for j in range(k):
                rooms.setdefault(f"r{(i + j) % args.rooms}", []).append(f"c{i}")
        messages = [f"r{n % args.rooms}" for n in range(args.messages)]
        text = '{"type":"chat","text":"hello"}'

        def emulated() -> None:
            lines = b"".join(
                encode_message_to_connection("p", member, text)
                for room in messages
                for member in rooms[room]
            )
            decoder = FrameDecoder(Role.BROKER)
            hub.on_actions(None, decoder.feed(lines))  # type: ignore[arg-type]

        rate = measure(hub, links, emulated, args.repeat)
        rows.append(Row(f"emulated, K={k}", k, members, rate, 1e9 / rate))
    return rows, per_join, memory


def print_table(rows: list[Row], joins: dict[int, tuple[float, float]]) -> None:
    print()
    print(f"{'':<16} {'members/room':>12} {'deliveries/s':>14} {'ns/delivery':>12}")
    for row in rows:
        print(
            f"{row.label:<16} {row.members_per_room:>12,.0f} {row.deliveries_per_s:>14,.0f} "
            f"{row.ns_per_delivery:>12,.0f}"
        )
    print()
    print(f"{'':<16} {'join_room/s':>12} {'bytes/joined room':>18}")
    for k, (per_join, per_membership) in joins.items():
        shown = "-" if per_join != per_join else f"{1 / per_join:,.0f}"
        memory = "-" if per_membership != per_membership else f"{per_membership:,.0f}"
        print(f"{'K=' + str(k):<16} {shown:>12} {memory:>18}")


def plot(rows: list[Row], path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * len(rows)))
    labels = [row.label for row in rows]
    values = [[row.deliveries_per_s / 1e6] for row in rows]
    texts = [f"{row.deliveries_per_s / 1e6:.2f} M/s, {row.ns_per_delivery:.0f} ns" for row in rows]
    shade = ["#dd8452" if row.label.startswith("emulated") else "#4c72b0" for row in rows]
    bars(ax, labels, values, texts, color=shade)
    ax.set_xlabel("room message deliveries per second (millions), the hub alone")
    ax.set_title("Clients in K rooms each: room messages, and their emulation by private ones")
    save_figure(fig, path)


def parse() -> Any:
    options = Options(__doc__, quick="fewer clients and messages, 2 repeats")
    options.add_mode("--clients", full=2000, quick=400, type=int, help="clients in the hub")
    options.add("--rooms", type=int, default=20, help="rooms (default 20; K <= rooms)")
    options.add_mode("--messages", full=2000, quick=200, type=int, help="room messages a batch")
    options.add_mode("--repeat", full=7, quick=2, type=int, help="batches timed, best taken")
    options.add(
        "--emulate", default="1,5,20", help="the K for which emulation is measured (default all)"
    )
    options.add_plot(RESULTS / "rooms_many.png")
    args = options.parse()
    args.emulate = {int(k) for k in args.emulate.split(",") if k}
    if args.rooms < max(KS) or args.clients < args.rooms:
        options.error(f"--rooms must be at least {max(KS)}, --clients at least --rooms")
    return args


def main() -> None:
    args = parse()
    logging.disable(logging.WARNING)  # the hub has no backend: its queue warns, unread
    machine = Machine(", one process: the hub alone, without sockets", "")
    rows: list[Row] = []
    joins: dict[int, tuple[float, float]] = {}
    for k in KS:
        note(f"K={k}: {args.clients:,} clients in {k} of {args.rooms} rooms each")
        setup_rows, per_join, memory = run_setup(args, k)
        rows += setup_rows
        if k == 1:
            base = memory
            joins[k] = (per_join, float("nan"))
        else:  # the hub's memory beyond K=1's, per joined room
            joins[k] = (per_join, (memory - base) / (args.clients * (k - 1)))
    machine.report()
    print_table(rows, joins)
    plot(rows, args.plot)


if __name__ == "__main__":
    main()
