"""Middleware benchmark: what the pipeline costs per event, side by side.

    python benchmarks/middleware.py            # full run (about a minute)
    python benchmarks/middleware.py --quick    # a smoke run (seconds)

The replay benchmark's set-up (``benchmarks/_replay.py``: this process plays the broker, each
backend runs in its own process pinned to one core, 100 clients each send ``new_message``
frames that the backend answers with ``send_private_message``), with three backends in
interleaved rounds:

- ``strands``: the bare ``StrandsClient`` (no pipeline at all);
- ``pipeline``: the same with a pipeline and nothing in it (the pipeline's fixed cost);
- ``noop5``: the same with five middleware that only ``await call_next(ctx)``;
- ``stack``: the same with the real stack: JWT auth (on messages, the identity its connection
  request left in metadata), a per-client rate limit that lets everything through, and
  logging at a level that is disabled.

Prints a table (events/s, ratio to the bare client, µs per event over it, µs per no-op layer)
and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse

from _common import RESULTS, Options, Spread, bars, pyplot, save_figure
from _replay import CLIENTS, add_options, frame_block, run_rounds

LABELS = {
    "strands": "bare StrandsClient",
    "pipeline": "pipeline, no middleware",
    "noop5": "5 no-op middleware",
    "stack": "auth + rate limit + logging (off)",
}
BARE = "strands"
NOOP_LAYERS = 5


def plot(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    kinds = list(results)
    medians = [Spread.of(results[k]).median for k in kinds]
    texts = [f"{value:,.0f}/s  ({value / medians[0]:.0%} of bare)" for value in medians]
    fig, ax = pyplot().subplots(figsize=(8, 3))
    bars(ax, [LABELS[k] for k in kinds], list(results.values()), texts, room=1.5)
    ax.set_xlabel("events per second (median of rounds; bars: min to max)")
    ax.set_title("Middleware cost: new_message -> send_private_message, one core", fontsize=10)
    save_figure(fig, args.plot)


def print_table(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    spreads = {kind: Spread.of(values) for kind, values in results.items()}
    medians = {kind: s.median for kind, s in spreads.items()}
    bare = medians.get(BARE)
    print(
        f"\nMiddleware: {args.events:,} new_message events, {CLIENTS} clients, "
        f"{args.rounds} interleaved round(s), median events/s"
    )
    print(
        f"{'backend':36s} {'events/s':>10s} {'min':>10s} {'max':>10s} {'/ bare':>7s} {'+µs/ev':>7s}"
    )
    for kind, s in spreads.items():
        ratio = s.median / bare if bare else float("nan")
        extra = (1e6 / s.median - 1e6 / bare) if bare else float("nan")
        print(
            f"{LABELS[kind]:36s} {s.median:10,.0f} {s.low:10,.0f} {s.high:10,.0f} "
            f"{ratio:7.2f} {extra:7.2f}"
        )
    if "pipeline" in medians and "noop5" in medians:
        per_layer = (1e6 / medians["noop5"] - 1e6 / medians["pipeline"]) / NOOP_LAYERS
        print(f"\nper no-op middleware layer: {per_layer:.2f} µs per event (target < 1 µs)")
    if bare and "stack" in medians:
        print(f"real stack keeps {medians['stack'] / bare:.0%} of the bare throughput (target 75%)")


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="20k events, 1 round")
    add_options(options, LABELS, ",".join(LABELS))
    options.add_plot(RESULTS / "middleware.png")
    return options.parse()


def main() -> None:
    args = parse()
    results = run_rounds(args, frame_block(identity=True))  # the same frames for every one
    print_table(results, args)
    plot(results, args)


if __name__ == "__main__":
    main()
