"""Replay benchmark: how many broker events per second a backend handles, side by side.

    python benchmarks/replay.py            # full run (about 2 minutes)
    python benchmarks/replay.py --quick    # a smoke run (seconds)

This process plays the broker: it listens on loopback, starts each backend in a subprocess
(``benchmarks/_backends.py``), blasts N ``new_message`` frames from 100 distinct clients (with
the reference broker's nested metadata) and times until N ``message_to_connection`` replies are
back. Contenders run in interleaved rounds and the median is reported, with ratios, because
the machine is shared and noisy. The broker side is pinned to CPU 0 and the backend to CPU 1
when there are two CPUs, so each backend is measured on one core.

Then a flood: 1,000,000 events at a strands-trio backend whose handler sleeps 1 ms before
replying; the backend's peak resident memory (VmHWM) shows that backpressure bounds it.

Prints a table and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
BACKENDS = HERE / "_backends.py"
CLIENTS = 100
BLOCK = 1000  # frames per pre-encoded block: 10 from each client
STALL_LIMIT = 60.0  # seconds without a reply before a run is abandoned

LABELS = {
    "raw": "raw loop (ceiling)",
    "strands": "strands-trio StrandsClient",
    "pystrands": "pystrands AsyncPyStrandsClient",
}


def frame_block(*, identity: bool = False) -> bytes:
    """BLOCK ``new_message`` frames, 10 from each client. With *identity*, each connection's
    metadata also holds what the Auth middleware leaves there: the identity it verified."""
    lines = []
    for i in range(BLOCK):
        client = f"client-{i % CLIENTS}"
        inner: dict[str, object] = {"user": client, "role": "member"}
        if identity:
            inner["identity"] = {"subject": client, "roles": ["member"], "claims": {}}
        context = {
            "client_id": client,
            "room_id": "bench",
            "metadata": {
                "accepted": True,
                "client_id": client,
                "room_id": "bench",
                "metadata": inner,
            },
        }
        frame = {
            "request_id": f"00000000-0000-4000-8000-{i:012d}",
            "action": "new_message",
            "params": {"context": context, "message": f"message number {i}"},
        }
        lines.append(orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(lines)


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {cpu})


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Run:
    """One backend process connected to this fake broker."""

    def __init__(self, kind: str, *extra: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKENDS), kind, str(port), *extra],
            preexec_fn=lambda: pin(1),
        )
        self.listener.settimeout(30)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(STALL_LIMIT)

    def replay(self, block: bytes, blocks: int, progress: str = "") -> float:
        """Send *blocks* blocks, wait for every reply; return the seconds it took."""
        expected = blocks * BLOCK
        failure: list[BaseException] = []

        def send() -> None:
            try:
                for _ in range(blocks):
                    self.conn.sendall(block)
            except OSError as exc:
                failure.append(exc)

        start = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = 0
        next_report = time.monotonic() + 1
        while received < expected:
            try:
                data = self.conn.recv(1 << 20)
            except TimeoutError:
                raise RuntimeError(f"no reply for {STALL_LIMIT:g} s") from None
            if not data:
                raise RuntimeError("the backend closed the connection")
            received += data.count(b"\n")
            if progress and time.monotonic() > next_report:
                next_report += 1
                print(f"\r  {progress}: {received:,}/{expected:,}", end="", file=sys.stderr)
        elapsed = time.perf_counter() - start
        sender.join()
        if failure:
            raise RuntimeError(f"send failed: {failure[0]}")
        if progress:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        return elapsed

    def close(self) -> float:
        """Stop the backend; return its peak RSS in MB."""
        rss = peak_rss_mb(self.proc.pid)
        self.conn.close()
        self.listener.close()
        self.proc.kill()
        self.proc.wait()
        return rss


def measure(kind: str, block: bytes, events: int) -> float:
    run = Run(kind)
    try:
        run.replay(block, 2)  # warm-up: imports, first allocations
        seconds = run.replay(block, events // BLOCK, progress=kind)
    finally:
        run.close()
    return events / seconds


def interleaved_rounds(
    kinds: list[str], block: bytes, events: int, rounds: int
) -> dict[str, list[float]]:
    """Events/s of each backend kind, *rounds* times, the kinds taking turns in each round
    (so that a noisy minute on this shared machine hits them all alike)."""
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for round_no in range(1, rounds + 1):
        for kind in kinds:
            rate = measure(kind, block, events)
            results[kind].append(rate)
            print(f"round {round_no}/{rounds}  {kind:10s} {rate:12,.0f} events/s", file=sys.stderr)
    return results


def flood(block: bytes, events: int, sleep: float) -> tuple[float, float, float]:
    """Return (idle RSS MB, peak RSS MB, seconds) of a sleeping-handler backend under a flood."""
    run = Run("flood", str(sleep))
    try:
        run.replay(block, 1)
        idle = peak_rss_mb(run.proc.pid)
        seconds = run.replay(block, events // BLOCK, progress="flood")
    finally:
        peak = run.close()
    return idle, peak, seconds


def plot(
    results: dict[str, list[float]],
    flood_result: tuple[float, float, float] | None,
    flood_events: int,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    medians = [statistics.median(results[k]) for k in kinds]
    low = [m - min(results[k]) for m, k in zip(medians, kinds, strict=True)]
    high = [max(results[k]) - m for m, k in zip(medians, kinds, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bars = ax.barh([LABELS[k] for k in kinds], medians, xerr=[low, high], color="#4c72b0")
    peer = statistics.median(results["pystrands"]) if "pystrands" in results else None
    for bar, kind, value in zip(bars, kinds, medians, strict=True):
        label = f"  {value:,.0f}/s" + (f"  ({value / peer:.1f}x peer)" if peer else "")
        ax.text(max(results[kind]), bar.get_y() + bar.get_height() / 2, label, va="center")
    ax.invert_yaxis()
    ax.set_xlabel("events per second (median of rounds; bars: min to max)")
    title = "Replay: new_message -> send_private_message, 100 clients, one core"
    if flood_result:
        peak = flood_result[1]
        title += f"\nflood of {flood_events:,} events, sleeping handler: peak RSS {peak:.0f} MB"
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(max(v) for v in results.values()) * 1.45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per contender")
    parser.add_argument("--flood-events", type=int, default=1_000_000, help="0 skips the flood")
    parser.add_argument("--flood-sleep", type=float, default=0.001, help="handler sleep (s)")
    parser.add_argument("--contenders", default="raw,strands,pystrands")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "replay.png")
    parser.add_argument("--quick", action="store_true", help="20k events, 1 round, 50k flood")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.flood_events = 20_000, 1, 50_000
    if args.events % BLOCK or args.flood_events % BLOCK:
        parser.error(f"event counts must be multiples of {BLOCK}")
    pin(0)
    block = frame_block()
    kinds = args.contenders.split(",")
    results = interleaved_rounds(kinds, block, args.events, args.rounds)
    flood_result = None
    if args.flood_events:
        flood_result = flood(block, args.flood_events, args.flood_sleep)

    medians = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nReplay: {args.events:,} new_message events, {CLIENTS} clients, "
        f"{args.rounds} interleaved round(s), median events/s"
    )
    print(
        f"{'backend':34s} {'events/s':>12s} {'min':>10s} {'max':>10s} {'x peer':>8s} {'/ raw':>7s}"
    )
    for kind in kinds:
        values = results[kind]
        vs_peer = medians[kind] / medians["pystrands"] if "pystrands" in medians else float("nan")
        vs_raw = medians[kind] / medians["raw"] if "raw" in medians else float("nan")
        print(
            f"{LABELS[kind]:34s} {medians[kind]:12,.0f} {min(values):10,.0f} {max(values):10,.0f} "
            f"{vs_peer:8.2f} {vs_raw:7.2f}"
        )
    if flood_result:
        idle, peak, seconds = flood_result
        print(
            f"\nFlood: {args.flood_events:,} events, "
            f"handler sleeps {args.flood_sleep * 1000:g} ms: "
            f"peak RSS {peak:.1f} MB (idle {idle:.1f} MB), {seconds:.1f} s, "
            f"{args.flood_events / seconds:,.0f} events/s"
        )
    plot(results, flood_result, args.flood_events, args.plot)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
