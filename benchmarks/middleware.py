"""Middleware benchmark: what the pipeline costs per event, side by side.

    python benchmarks/middleware.py            # full run (about a minute)
    python benchmarks/middleware.py --quick    # a smoke run (seconds)

The replay benchmark's set-up (``benchmarks/replay.py``: this process plays the broker, each
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
import statistics
from pathlib import Path

from replay import BLOCK, HERE, frame_block, interleaved_rounds, pin

LABELS = {
    "strands": "bare StrandsClient",
    "pipeline": "pipeline, no middleware",
    "noop5": "5 no-op middleware",
    "stack": "auth + rate limit + logging (off)",
}
NOOP_LAYERS = 5


def plot(results: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    medians = [statistics.median(results[k]) for k in kinds]
    bare = medians[0]
    fig, ax = plt.subplots(figsize=(8, 3))
    bars = ax.barh([LABELS[k] for k in kinds], medians, color="#4c72b0")
    for bar, kind, value in zip(bars, kinds, medians, strict=True):
        label = f"  {value:,.0f}/s  ({value / bare:.0%} of bare)"
        ax.text(max(results[kind]), bar.get_y() + bar.get_height() / 2, label, va="center")
    ax.invert_yaxis()
    ax.set_xlabel("events per second (median of rounds)")
    ax.set_title("Middleware cost: new_message -> send_private_message, one core", fontsize=10)
    ax.set_xlim(0, max(max(v) for v in results.values()) * 1.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per contender")
    parser.add_argument("--contenders", default="strands,pipeline,noop5,stack")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "middleware.png")
    parser.add_argument("--quick", action="store_true", help="20k events, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 20_000, 1
    if args.events % BLOCK:
        parser.error(f"--events must be a multiple of {BLOCK}")
    pin(0)
    block = frame_block(identity=True)  # every contender gets the same frames
    kinds = args.contenders.split(",")
    results = interleaved_rounds(kinds, block, args.events, args.rounds)

    medians = {k: statistics.median(v) for k, v in results.items()}
    bare = medians.get("strands")
    print(
        f"\nMiddleware: {args.events:,} new_message events, 100 clients, "
        f"{args.rounds} interleaved round(s), median events/s"
    )
    print(
        f"{'backend':36s} {'events/s':>10s} {'min':>10s} {'max':>10s} {'/ bare':>7s} {'+µs/ev':>7s}"
    )
    for kind in kinds:
        values = results[kind]
        ratio = medians[kind] / bare if bare else float("nan")
        extra = (1e6 / medians[kind] - 1e6 / bare) if bare else float("nan")
        print(
            f"{LABELS[kind]:36s} {medians[kind]:10,.0f} {min(values):10,.0f} "
            f"{max(values):10,.0f} {ratio:7.2f} {extra:7.2f}"
        )
    if "pipeline" in medians and "noop5" in medians:
        per_layer = (1e6 / medians["noop5"] - 1e6 / medians["pipeline"]) / NOOP_LAYERS
        print(f"\nper no-op middleware layer: {per_layer:.2f} µs per event (target < 1 µs)")
    if bare and "stack" in medians:
        print(f"real stack keeps {medians['stack'] / bare:.0%} of the bare throughput (target 70%)")
    plot(results, args.plot)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
