"""WebSocket layer benchmark: Trio echo servers side by side under the same picows load, and
the framing cost of the two sans-IO cores they can be built on.

    python benchmarks/websocket.py            # full run (about 3 minutes)
    python benchmarks/websocket.py --quick    # a smoke run (seconds)

Servers (``benchmarks/_servers.py KIND``): ``trio-websocket`` (wsproto inside),
``websockets-trio`` (websockets' own Trio server), ``sansio`` (a minimal Trio adapter over
websockets' sans-IO ``ServerProtocol``) and ``adapter`` (the broker's own adapter,
``strands_trio.broker._connection``, with an echo in place of the hub); ``adapter-deflate``
(the same with permessage-deflate, the clients offering it) on request. Each run is a
fresh server process pinned to CPU 0 and a load-generator process pinned to CPU 1
(``benchmarks/_wsload.py pingpong``: N picows clients, each sending a message, waiting for its
echo and sending the next; compiled, so the server is the bottleneck), for a short warm-up then
a timed window. The servers take turns in interleaved rounds (the machine is shared and noisy);
the median of rounds is reported, with the min and max of the throughput.

For each server: round trips per second, the p50/p95/p99 round-trip latency, and the server's
CPU time per round trip (one message in and one out), read from ``/proc/PID/task/*/schedstat``
at the bounds of the timed window: the figure a busy machine disturbs least. The share of the
window each process ran on a CPU / waited for one says which one was the bottleneck and how
much the neighbours got in the way.

Framing: the cost, in this process, of one small text message through each sans-IO core as a
server sees it: ``in`` (a masked frame's bytes fed, the message's text out) and ``out`` (the
text in, the frame's bytes out), one frame per read (ping-pong) and 16 per read (a busy
connection): wsproto (``WSConnection``: ``receive_data``, ``events``, ``send``) against
websockets (``ServerProtocol``: ``receive_data``, ``events_received``, ``send_text``,
``data_to_send``, with the UTF-8 decode and encode that wsproto does itself).

Prints a table and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import attrs
from _servers import DEFLATE_KINDS, KINDS
from broker import (
    NAN2,
    RUN_MARGIN,
    START_TIMEOUT,
    Round,
    cpu_times,
    processes,
    read_line,
    two_cpus,
)

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "_servers.py"
WSLOAD = HERE / "_wsload.py"

LABELS = {
    "trio-websocket": "trio-websocket (wsproto)",
    "websockets-trio": "websockets.trio",
    "sansio": "websockets sans-IO, minimal adapter",
    "adapter": "strands_trio.broker adapter",
    "adapter-deflate": "strands_trio.broker adapter, deflate",
}
DEFAULT_SERVERS = [kind for kind in KINDS if kind not in DEFLATE_KINDS]


# ---------------------------------------------------------------------- ping-pong


def run_echo(kind: str, args: argparse.Namespace, label: str) -> Round:
    """One run: a fresh *kind* server on CPU 0, the ping-pong load on CPU 1."""
    with processes() as procs:
        server = procs.start(
            "server", [sys.executable, str(SERVERS), kind], cpu=0, stdout=subprocess.PIPE
        )
        line = read_line(server, time.monotonic() + START_TIMEOUT).strip()
        if not line.isdigit():
            raise RuntimeError(f"the {kind} server said {line!r}")
        out = procs.dir / "samples.bin"
        command = [
            sys.executable, str(WSLOAD), "pingpong", line,
            "--clients", str(args.clients), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--out", str(out), "--label", label,
            "--firehose", str(args.firehose),
            *(["--deflate"] if kind in DEFLATE_KINDS else []),
        ]  # fmt: skip
        load = procs.start("load", command, cpu=1, stdout=subprocess.PIPE, service=False)
        watched = {"server": server.pid, "load": load.pid}
        deadline = time.monotonic() + args.warmup + args.duration + RUN_MARGIN
        marks: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}
        summary: dict[str, object] = {}
        while not summary:
            line = read_line(load, deadline).strip()
            if not line:
                procs.check_alive()
                raise RuntimeError(f"{kind}: the load generator exited")
            if line in ("start", "end"):
                marks[line] = (time.monotonic(), {n: cpu_times(p) for n, p in watched.items()})
            elif line.startswith("{"):
                summary = json.loads(line)
        load.wait(timeout=10)
        procs.check_alive()
        samples = array("d")
        samples.frombytes(out.read_bytes())
    keys = ("mismatches", "closed_early", "timed_out", "stuck", "closes")
    problems = [f"{key} = {summary[key]}" for key in keys if summary[key]]
    if summary["connected"] != args.clients:
        problems.append(f"{summary['connected']} of {args.clients} connected")
        problems.append(", ".join(summary["connect_failures"]))  # type: ignore[arg-type]
    if problems:
        raise RuntimeError(f"{kind}: " + "; ".join(problems))
    cpu: dict[str, tuple[float, float]] = {}
    (t0, before), (t1, after) = marks["start"], marks["end"]
    for name in watched:
        (ran0, waited0), (ran1, waited1) = before[name], after[name]
        cpu[name] = (100 * (ran1 - ran0) / (t1 - t0), 100 * (waited1 - waited0) / (t1 - t0))
    return Round(len(samples) / args.duration, array("d", sorted(samples)), cpu)


def interleaved_rounds(kinds: list[str], args: argparse.Namespace) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {kind: [] for kind in kinds}
    for round_no in range(1, args.rounds + 1):
        for kind in kinds:
            result = run_echo(kind, args, f"{kind} {round_no}/{args.rounds}")
            results[kind].append(result)
            cpu = " ".join(
                f"{name} {ran:.0f}/{waited:.0f}" for name, (ran, waited) in result.cpu.items()
            )
            print(
                f"round {round_no}/{args.rounds}  {kind:16s} {result.rate:9,.0f} msg/s  "
                f"p99 {result.percentile(0.99) * 1e3:6.2f} ms  "
                f"{micros(result, 'server'):5.1f} µs/msg  CPU/wait %: {cpu}",
                file=sys.stderr,
            )
    return results


def micros(result: Round, name: str) -> float:
    """*name*'s CPU time per round trip in *result*, µs."""
    ran = result.cpu.get(name, NAN2)[0]
    return ran / 100 * 1e6 / result.rate if result.rate else math.nan


def cpu_share(rounds: list[Round], name: str) -> tuple[float, float]:
    """The median over *rounds* of the % of the window *name* ran on a CPU, waited for one."""
    ran = statistics.median(r.cpu.get(name, NAN2)[0] for r in rounds)
    return ran, statistics.median(r.cpu.get(name, NAN2)[1] for r in rounds)


def median_of(rounds: list[Round], value: Callable[[Round], float]) -> float:
    return statistics.median(value(r) for r in rounds)


# ---------------------------------------------------------------------- framing

MESSAGE = "client 12 message 3456"  # what the ping-pong clients send, give or take a digit
HANDSHAKE = (
    b"GET /ws/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

Codec = tuple[Callable[[bytes], list[str]], Callable[[str], object]]  # (inbound, outbound)


def wsproto_codec() -> Codec:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Message, Request

    conn = WSConnection(ConnectionType.SERVER)
    conn.receive_data(HANDSHAKE)
    for event in conn.events():
        assert isinstance(event, Request)
        conn.send(AcceptConnection())

    def inbound(data: bytes) -> list[str]:
        conn.receive_data(data)
        return [event.data for event in conn.events()]  # type: ignore[attr-defined]

    def outbound(text: str) -> bytes:
        return conn.send(Message(data=text))

    return inbound, outbound


def websockets_codec() -> Codec:
    from websockets.server import ServerProtocol

    protocol = ServerProtocol()
    protocol.receive_data(HANDSHAKE)
    for event in protocol.events_received():
        protocol.send_response(protocol.accept(event))  # type: ignore[arg-type]
    protocol.data_to_send()

    def inbound(data: bytes) -> list[str]:
        protocol.receive_data(data)
        events = protocol.events_received()
        return [bytes(event.data).decode() for event in events]  # type: ignore[union-attr]

    def outbound(text: str) -> list[bytes]:
        protocol.send_text(text.encode())
        return protocol.data_to_send()

    return inbound, outbound


CODECS: dict[str, Callable[[], Codec]] = {"wsproto": wsproto_codec, "websockets": websockets_codec}


@attrs.frozen
class Framing:
    codec: str
    batch: int  # frames per receive_data()
    inbound_us: float  # per message
    outbound_us: float


def measure_framing(messages: int, repeat: int) -> list[Framing]:
    """The best of *repeat* passes of *messages* messages in and out, per codec and batch."""
    from websockets.frames import Frame, Opcode

    frame = Frame(Opcode.TEXT, MESSAGE.encode()).serialize(mask=True, extensions=[])
    results = []
    for name, make in CODECS.items():
        for batch in (1, 16):
            inbound, outbound = make()
            chunk, reads = frame * batch, max(1, messages // batch)
            best_in = best_out = math.inf
            for _ in range(repeat):
                started = time.perf_counter()
                for _ in range(reads):
                    got = inbound(chunk)
                best_in = min(best_in, (time.perf_counter() - started) / (reads * batch))
                if got != [MESSAGE] * batch:
                    raise RuntimeError(f"{name} decoded {got[:2]!r}")
                started = time.perf_counter()
                for _ in range(reads * batch):
                    outbound(MESSAGE)
                best_out = min(best_out, (time.perf_counter() - started) / (reads * batch))
            results.append(Framing(name, batch, best_in * 1e6, best_out * 1e6))
    return results


def print_framing(framing: list[Framing]) -> None:
    print(
        f"\nFraming cost per {len(MESSAGE)}-byte text message, server side, in this process "
        "(µs; best of passes)"
    )
    print(f"{'sans-IO core':14s} {'frames/read':>11s} {'in':>7s} {'out':>7s} {'in + out':>9s}")
    for f in framing:
        total = f.inbound_us + f.outbound_us
        print(f"{f.codec:14s} {f.batch:11d} {f.inbound_us:7.2f} {f.outbound_us:7.2f} {total:9.2f}")


# ---------------------------------------------------------------------- report


def percentile_ms(rounds: list[Round], q: float) -> float:
    """The median over rounds of each round's percentile *q*, in ms."""
    return median_of(rounds, lambda r: r.percentile(q)) * 1e3


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    medians = {kind: median_of(rounds, lambda r: r.rate) for kind, rounds in results.items()}
    best = max(medians.values())
    window = f"{args.firehose} in flight each" if args.firehose > 1 else "ping-pong"
    print(
        f"\nWebSocket echo servers: {args.clients} picows clients ({window}), "
        f"{args.duration:g} s timed after {args.warmup:g} s warm-up, {args.rounds} interleaved "
        "round(s); median of rounds"
    )
    print(
        f"{'server':36s} {'msg/s':>8s} {'min':>8s} {'max':>8s} {'/best':>6s} {'p50 ms':>7s} "
        f"{'p95 ms':>7s} {'p99 ms':>7s} {'server µs/msg':>13s} {'server %':>9s} {'load %':>7s}"
    )
    for kind, rounds in results.items():
        rates = [r.rate for r in rounds]
        server = median_of(rounds, lambda r: micros(r, "server"))
        cpu = {name: cpu_share(rounds, name) for name in ("server", "load")}
        print(
            f"{LABELS.get(kind, kind):36s} {medians[kind]:8,.0f} {min(rates):8,.0f} "
            f"{max(rates):8,.0f} {medians[kind] / best:6.2f} {percentile_ms(rounds, 0.50):7.2f} "
            f"{percentile_ms(rounds, 0.95):7.2f} {percentile_ms(rounds, 0.99):7.2f} "
            f"{server:13.1f} {cpu['server'][0]:4.0f}/{cpu['server'][1]:<4.0f} "
            f"{cpu['load'][0]:3.0f}/{cpu['load'][1]:<3.0f}"
        )
    print(
        "(µs/msg: the server's CPU time per round trip, one message in and one out; "
        "%: the share of the window on a CPU / waiting for one)"
    )


def plot(results: dict[str, list[Round]], framing: list[Framing], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    (rate_ax, cpu_ax), (cdf_ax, framing_ax) = axes
    kinds = list(results)
    labels = [LABELS.get(k, k) for k in kinds]
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))

    medians = [median_of(results[k], lambda r: r.rate) for k in kinds]
    low = [m - min(r.rate for r in results[k]) for m, k in zip(medians, kinds, strict=True)]
    high = [max(r.rate for r in results[k]) - m for m, k in zip(medians, kinds, strict=True)]
    tops = [max(r.rate for r in results[k]) for k in kinds]
    bars = rate_ax.barh(labels, medians, xerr=[low, high], color=[colors[k] for k in kinds])
    for bar, value, top in zip(bars, medians, tops, strict=True):
        rate_ax.text(top * 1.02, bar.get_y() + bar.get_height() / 2, f"{value:,.0f}/s", va="center")
    rate_ax.invert_yaxis()
    rate_ax.set_xlim(0, max(tops) * 1.3)
    rate_ax.set_xlabel("round trips per second (median; bars: min to max)")
    rate_ax.set_title(
        f"Throughput, {args.clients} picows clients, {args.rounds} round(s)", fontsize=10
    )

    cpu = [median_of(results[k], lambda r: micros(r, "server")) for k in kinds]
    bars = cpu_ax.barh(labels, cpu, color=[colors[k] for k in kinds])
    for bar, value in zip(bars, cpu, strict=True):
        cpu_ax.text(value * 1.02, bar.get_y() + bar.get_height() / 2, f"{value:.1f}", va="center")
    cpu_ax.invert_yaxis()
    cpu_ax.set_xlim(0, max(cpu) * 1.2 if all(map(math.isfinite, cpu)) else 1)
    cpu_ax.set_xlabel("server CPU µs per round trip (median)")
    cpu_ax.set_title("Server CPU per message in + out", fontsize=10)

    for kind in kinds:
        ordered = sorted(s * 1e3 for r in results[kind] for s in r.samples)
        if not ordered:
            continue
        n, step = len(ordered), max(1, len(ordered) // 2000)
        xs = [*ordered[::step], ordered[-1]]
        ys = [*(i / n for i in range(0, n, step)), 1.0]
        cdf_ax.plot(xs, ys, label=LABELS.get(kind, kind), color=colors[kind])
        cdf_ax.axvline(percentile_ms(results[kind], 0.99), color=colors[kind], ls=":", lw=1)
    cdf_ax.set_xscale("log")
    cdf_ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    cdf_ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    cdf_ax.xaxis.set_minor_formatter(NullFormatter())
    cdf_ax.set_xlabel("round-trip latency, ms (log; rounds pooled; dotted: median p99)")
    cdf_ax.set_ylabel("fraction of round trips")
    cdf_ax.set_ylim(0, 1.01)
    cdf_ax.grid(True, which="both", alpha=0.3)
    cdf_ax.legend(fontsize=8, loc="lower right")
    cdf_ax.set_title("Latency CDF", fontsize=10)

    if framing:
        names = [f"{f.codec}\n{f.batch}/read" for f in framing]
        ins = [f.inbound_us for f in framing]
        outs = [f.outbound_us for f in framing]
        framing_ax.barh(names, ins, label="in (bytes to text)", color="tab:blue")
        framing_ax.barh(names, outs, left=ins, label="out (text to bytes)", color="tab:orange")
        for index, (i, o) in enumerate(zip(ins, outs, strict=True)):
            framing_ax.text((i + o) * 1.02, index, f"{i + o:.2f}", va="center")
        framing_ax.invert_yaxis()
        framing_ax.set_xlim(0, max(i + o for i, o in zip(ins, outs, strict=True)) * 1.25)
        framing_ax.set_xlabel(f"µs per {len(MESSAGE)}-byte text message (best of passes)")
        framing_ax.legend(fontsize=8, loc="lower right")
    framing_ax.set_title("Sans-IO framing cost, server side, in-process", fontsize=10)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="WebSocket clients")
    parser.add_argument("--firehose", type=int, default=1, help="messages in flight per client")
    parser.add_argument("--duration", type=float, help="timed seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds before timing (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per server (default 3)")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from: {', '.join(KINDS)} (default: all but the deflate ones; "
        "empty: framing only)",
    )
    parser.add_argument(
        "--framing-messages", type=int, help="messages per framing pass (default 20000; 0: skip)"
    )
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "websocket.png")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 round")
    args = parser.parse_args()
    # --quick: 2 s runs, 1 round, a short framing pass; explicit flags win.
    quick = {"warmup": 0.5, "duration": 2.0, "rounds": 1, "framing_messages": 4000}
    full = {"warmup": 2.0, "duration": 10.0, "rounds": 3, "framing_messages": 20000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.clients < 1 or args.firehose < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients, --firehose and --duration must be positive, --warmup >= 0")
    if args.rounds < 1 or args.framing_messages < 0:
        parser.error("--rounds must be at least 1, --framing-messages >= 0")
    kinds = [k for k in args.servers.split(",") if k]
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"unknown server {kind!r}: choose from {', '.join(KINDS)}")
    if not two_cpus():
        print("one CPU: processes are not pinned", file=sys.stderr)

    load_before = os.getloadavg()[0]
    framing = measure_framing(args.framing_messages, 5) if args.framing_messages else []
    results = interleaved_rounds(kinds, args) if kinds else {}

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinning = ", servers pinned to CPU 0, the load generator to CPU 1" if two_cpus() else ""
    print(
        f"\n{cpus} CPU(s){pinning}; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (a busy machine shows in the 'waiting' figures)"
    )
    if results:
        print_table(results, args)
    if framing:
        print_framing(framing)
    if results:
        plot(results, framing, args)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
