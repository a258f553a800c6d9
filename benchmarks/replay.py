"""Replay benchmark: how many broker events per second a backend handles, side by side.

    python benchmarks/replay.py            # full run (about 2 minutes)
    python benchmarks/replay.py --quick    # a smoke run (seconds)

This process plays the broker (``benchmarks/_replay.py``): it listens on loopback, starts each
backend in a subprocess (``benchmarks/_backends.py``), blasts N ``new_message`` frames from 100
distinct clients (with the reference broker's nested metadata) and times until N
``message_to_connection`` replies are back. Contenders run in interleaved rounds and the median
is reported, with ratios, because the machine is shared and noisy. The broker side is pinned to
CPU 0 and the backend to CPU 1 when there are two CPUs, so each backend is measured on one core.

Then a flood: 1,000,000 events at a strands-trio backend whose handler sleeps 1 ms before
replying; the backend's peak resident memory (VmHWM) shows that backpressure bounds it.

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
    options.add_plot(RESULTS / "replay.png")
    return options.parse()


def main() -> None:
    args = parse()
    block = frame_block()
    results = run_rounds(args, block)
    flood_result = None
    if args.flood_events:
        flood_result = flood(block, args.flood_events, args.flood_sleep)
    print_table(results, args)
    if flood_result:
        idle, peak, seconds = flood_result
        print(
            f"\nFlood: {args.flood_events:,} events, "
            f"handler sleeps {args.flood_sleep * 1000:g} ms: "
            f"peak RSS {peak:.1f} MB (idle {idle:.1f} MB), {seconds:.1f} s, "
            f"{args.flood_events / seconds:,.0f} events/s"
        )
    plot(results, flood_result, args)


if __name__ == "__main__":
    main()
