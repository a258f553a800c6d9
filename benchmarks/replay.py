"""Replay benchmark: how many broker events per second a backend handles, side by side.

    python benchmarks/replay.py            # full run (about 2 minutes)
    python benchmarks/replay.py --quick    # a smoke run (seconds)

This process plays the broker (``benchmarks/_replay.py``): it listens on loopback, starts each
backend in a subprocess (``benchmarks/_backends.py``), blasts N ``new_message`` frames from 100
distinct clients (with the reference broker's nested metadata) and times until N
``message_to_connection`` replies are back. Contenders run in interleaved rounds and the median
is reported, with ratios, because the machine is shared and noisy. The broker side is pinned to
CPU 0 and the backend to CPU 1 when there are two CPUs, so each backend is measured on one core.

Then two floods at a strands-trio backend whose handler sleeps before replying: 1,000,000
small events (1 ms each), and 1,100 events of 512 KiB from one client (10 ms each, one at a
time: ``--large-flood-*``). The
backend's peak resident memory (VmHWM) shows that backpressure bounds it, in events and in
bytes (``ClientConfig.max_pending_events``, ``max_pending_bytes``).

Prints a table and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import math

from _common import RESULTS, Options, Spread, bars, pyplot, save_figure
from _replay import CLIENTS, add_events, add_options, flood, frame_block, run_rounds

LABELS = {
    "raw": "raw loop (ceiling)",
    "strands": "strands-trio StrandsClient",
    "pystrands": "pystrands AsyncPyStrandsClient",
}
PEER, RAW = "pystrands", "raw"


def plot(
    results: dict[str, list[float]],
    flood_result: tuple[float, float, float] | None,
    args: argparse.Namespace,
) -> None:
    kinds = list(results)
    peer = Spread.of(results[PEER]).median if PEER in results else None
    texts = []
    for kind in kinds:
        value = Spread.of(results[kind]).median
        texts.append(f"{value:,.0f}/s" + (f"  ({value / peer:.1f}x peer)" if peer else ""))
    fig, ax = pyplot().subplots(figsize=(8, 3.8))
    bars(ax, [LABELS[k] for k in kinds], list(results.values()), texts)
    ax.set_xlabel("events per second (median of rounds; bars: min to max)")
    title = "Replay: new_message -> send_private_message, 100 clients, one core"
    if flood_result:
        peak = flood_result[1]
        title += (
            f"\nflood of {args.flood_events:,} events, sleeping handler: peak RSS {peak:.0f} MB"
        )
    ax.set_title(title, fontsize=10)
    save_figure(fig, args.plot)


def print_table(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    spreads = {kind: Spread.of(values) for kind, values in results.items()}
    print(
        f"\nReplay: {args.events:,} new_message events, {CLIENTS} clients, "
        f"{args.rounds} interleaved round(s), median events/s"
    )
    print(
        f"{'backend':34s} {'events/s':>12s} {'min':>10s} {'max':>10s} {'x peer':>8s} {'/ raw':>7s}"
    )
    for kind, s in spreads.items():
        vs_peer = s.median / spreads[PEER].median if PEER in spreads else math.nan
        vs_raw = s.median / spreads[RAW].median if RAW in spreads else math.nan
        print(
            f"{LABELS[kind]:34s} {s.median:12,.0f} {s.low:10,.0f} {s.high:10,.0f} "
            f"{vs_peer:8.2f} {vs_raw:7.2f}"
        )


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="20k events, 1 round, 50k flood")
    add_options(options, LABELS, "raw,strands,pystrands")
    add_events(options, "--flood-events", full=1_000_000, quick=50_000, help="0 skips the flood")
    options.add("--flood-sleep", type=float, default=0.001, help="handler sleep (s)")
    options.add_mode(
        "--large-flood-events",
        full=1_100,
        quick=110,
        type=int,
        help="events of the large flood, a multiple of 10 (0 skips it)",
    )
    options.add("--large-flood-size", type=int, default=512 << 10, help="their size (bytes)")
    options.add("--large-flood-sleep", type=float, default=0.01, help="handler sleep (s)")
    options.add(
        "--large-flood-clients",
        type=int,
        default=1,
        help="clients sending them (one client's events are handled one at a time)",
    )
    options.add_plot(RESULTS / "replay.png")
    return options.parse()


def main() -> None:
    args = parse()
    block = frame_block()
    results = run_rounds(args, block)
    flood_result = large = None
    if args.flood_events:
        flood_result = flood(block, args.flood_events, args.flood_sleep)
    if args.large_flood_events:
        large_block = frame_block(
            size=args.large_flood_size, count=10, clients=args.large_flood_clients
        )
        large = flood(large_block, args.large_flood_events, args.large_flood_sleep, per_block=10)
    print_table(results, args)
    if flood_result:
        idle, peak, seconds = flood_result
        print(
            f"\nFlood: {args.flood_events:,} events, "
            f"handler sleeps {args.flood_sleep * 1000:g} ms: "
            f"peak RSS {peak:.1f} MB (idle {idle:.1f} MB), {seconds:.1f} s, "
            f"{args.flood_events / seconds:,.0f} events/s"
        )
    if large:
        idle, peak, seconds = large
        print(
            f"Large flood: {args.large_flood_events:,} events of "
            f"{args.large_flood_size / 1024:,.0f} KiB from {args.large_flood_clients} "
            f"client(s), handler sleeps "
            f"{args.large_flood_sleep * 1000:g} ms: peak RSS {peak:.1f} MB "
            f"(idle {idle:.1f} MB, growth {peak - idle:.1f} MB), {seconds:.1f} s"
        )
    plot(results, flood_result, args)


if __name__ == "__main__":
    main()
