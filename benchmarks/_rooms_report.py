"""The report of the room fan-out benchmarks (``cluster.py``, ``fanout.py``): a table of each
setup's best sustained step and of every step, and a figure (deliveries against the offered
rate, delay percentiles, and the delays' distribution at the highest rate all sustained)."""

from __future__ import annotations

import argparse

from _common import cdf, log_ms_axis, pyplot, save_figure
from _rooms import GOOD_SHARE, Result, common_rate, step_at

TARGET_P99 = 0.050  # seconds


def print_table(
    results: list[Result],
    args: argparse.Namespace,
    target: float,
    p99_target: float | None = TARGET_P99,
) -> None:
    """The best sustained step of each setup, the last one's deliveries per second over the
    first one's (against *target*), the delays at the highest rate all sustained (against
    *p99_target*, seconds, if any), and every step."""
    print(
        f"\nRoom fan-out: {args.clients} WebSocket clients in one room, one publisher, "
        f"{args.duration:g} s steps; sustained: >= {GOOD_SHARE:.0%} of the deliveries arrived "
        "and no client was cut off\n"
    )
    print(
        "| setup | best sustained rate, msg/s | deliveries/s | p50 ms | p99 ms "
        "| % on CPU / waiting |"
    )
    print("|---|---|---|---|---|---|")
    for result in results:
        best = result.best
        if best is None:
            print(f"| {result.name} | none sustained | | | | |")
            continue
        busy = ", ".join(f"{k} {run:.0f}/{wait:.0f}" for k, (run, wait) in best.cpu.items())
        print(
            f"| {result.name} | {best.rate:,.4g} | {best.delivered_per_s:,.0f} | "
            f"{best.percentile(0.5) * 1e3:.1f} | {best.percentile(0.99) * 1e3:.1f} | {busy} |"
        )
    one, two = results[0].best, results[-1].best
    if len(results) > 1 and one and two:
        ratio = two.delivered_per_s / one.delivered_per_s
        print(
            f"\n{results[-1].name} / {results[0].name}: {ratio:.2f}x deliveries per "
            f"second sustained (target: {target:g}x): {'met' if ratio >= target else 'NOT met'}"
        )
    rate = common_rate(results)
    if rate is not None:
        figures = ", ".join(
            f"{r.name} p50 {step_at(r, rate).percentile(0.5) * 1e3:.1f} ms, "
            f"p99 {step_at(r, rate).percentile(0.99) * 1e3:.1f} ms"
            for r in results
        )
        print(
            f"at {rate:,.4g} msg/s ({rate * args.clients:,.0f} deliveries/s), sustained by both: "
            f"{figures}" + (f" (target: p99 < {p99_target * 1e3:.0f} ms)" if p99_target else "")
        )
    print("\nEvery step:\n")
    print("| setup | rate, msg/s | deliveries/s | delivered | p50 ms | p99 ms | cut off |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        for s in result.steps:
            share = len(s.delays) / max(1, s.expected(result.clients))
            print(
                f"| {result.name} | {s.rate:,.1f} | {s.delivered_per_s:,.0f} | {share:.1%} | "
                f"{s.percentile(0.5) * 1e3:.1f} | {s.percentile(0.99) * 1e3:.1f} | {s.closed} |"
            )


def plot(
    results: list[Result],
    args: argparse.Namespace,
    log_rates: bool = False,
    p99_line: float = TARGET_P99,
) -> None:
    """Deliveries against the offered rate, delay percentiles, and the delays' CDF at the
    highest rate all sustained (rates on log axes with *log_rates*: setups far apart), with a
    dashed line at *p99_line* seconds."""
    from matplotlib.ticker import FuncFormatter

    fig, (rates, tails, right) = pyplot().subplots(1, 3, figsize=(14, 4.2))
    thousands = FuncFormatter(lambda value, _: f"{value / 1000:g}k")
    if log_rates:
        rates.set_xscale("log")
        rates.set_yscale("log")
        tails.set_xscale("log")
    for axis in (rates.xaxis, rates.yaxis, tails.xaxis):
        axis.set_major_formatter(thousands)
    common = common_rate(results)
    top = max(s.rate * r.clients for r in results for s in r.steps)
    for result in results:
        steps = sorted(result.steps, key=lambda s: s.rate)
        xs = [s.rate * result.clients for s in steps]
        delivered = [s.delivered_per_s for s in steps]
        line = rates.plot(xs, delivered, marker="o", label=result.name)[0]
        color = line.get_color()
        tails.plot(
            xs, [s.percentile(0.99) * 1e3 for s in steps], marker="o", color=color,
            label=f"{result.name} p99",
        )  # fmt: skip
        tails.plot(
            xs, [s.percentile(0.5) * 1e3 for s in steps], marker=".", linestyle=":",
            color=color, label=f"{result.name} p50",
        )  # fmt: skip
        if common is not None:
            delays = step_at(result, common).delays
            cdf(right, (d * 1e3 for d in delays), color=color, label=result.name)
    low = min(s.rate * r.clients for r in results for s in r.steps) if log_rates else 0
    rates.plot([low, top], [low, top], color="grey", linewidth=0.8, linestyle="--",
               label="offered")  # fmt: skip
    rates.set_xlabel("deliveries/s offered (rate x clients)")
    rates.set_ylabel("deliveries/s that arrived")
    rates.legend(fontsize=8)
    rates.grid(True, alpha=0.3)
    rates.set_title(f"{args.clients} clients in one room, one publisher", fontsize=10)
    tails.axhline(p99_line * 1e3, color="grey", linestyle="--", linewidth=0.8)
    tails.set_yscale("log")
    tails.set_xlabel("deliveries/s offered")
    tails.set_ylabel("delivery delay, ms (log)")
    tails.legend(fontsize=7)
    tails.grid(True, which="both", alpha=0.3)
    tails.set_title(f"delay percentiles (dashed: {p99_line * 1e3:.0f} ms)", fontsize=10)
    if common is not None:
        right.axvline(p99_line * 1e3, color="grey", linestyle="--", linewidth=0.8)
        log_ms_axis(right, "delivery delay, ms (log)", "deliveries")
        right.set_title(f"at {common:,.4g} msg/s, sustained by both", fontsize=10)
    save_figure(fig, args.plot)
