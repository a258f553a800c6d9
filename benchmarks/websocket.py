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
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from _brokers import start_echo_server
from _common import (
    RESULTS,
    WAITING,
    CpuMarks,
    Machine,
    Options,
    Spread,
    bars,
    best_of,
    colors,
    cpu_share,
    interleaved_rounds,
    median_of,
    processes,
    pyplot,
    save_figure,
)
from _loadgen import Round, percentile_ms, pingpong, plot_latencies, problems
from _servers import DEFLATE_KINDS, KINDS

LABELS = {
    "trio-websocket": "trio-websocket (wsproto)",
    "websockets-trio": "websockets.trio",
    "sansio": "websockets sans-IO, minimal adapter",
    "adapter": "strands_trio.broker adapter",
    "adapter-deflate": "strands_trio.broker adapter, deflate",
}
DEFAULT_SERVERS = [kind for kind in KINDS if kind not in DEFLATE_KINDS]
#: What must be zero in a run's summary (an echo server is not asked for its losses).
TROUBLE = ("mismatches", "closed_early", "timed_out", "stuck", "closes")


# ---------------------------------------------------------------------- ping-pong


def run_echo(args: argparse.Namespace, kind: str, label: str) -> Round:
    """One run: a fresh *kind* server on CPU 0, the ping-pong load on CPU 1."""
    with processes("websocket-bench-") as procs:
        server, port = start_echo_server(procs, kind)
        cpu = CpuMarks({"server": server.pid})
        options = ["--firehose", str(args.firehose)]
        options += ["--deflate"] if kind in DEFLATE_KINDS else []
        summary, samples = pingpong(procs, port, args, label, cpu, *options)
        procs.check_alive()
    trouble = problems(summary, args.clients, TROUBLE)
    if trouble:
        raise RuntimeError(f"{kind}: " + "; ".join(trouble))
    return Round(len(samples) / args.duration, samples, cpu.shares())


def show(result: Round) -> str:
    return f"{result.show()}  {result.micros('server'):5.1f} µs/msg"


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
            got = inbound(chunk)
            if got != [MESSAGE] * batch:
                raise RuntimeError(f"{name} decoded {got[:2]!r}")
            count = reads * batch
            results.append(
                Framing(
                    name,
                    batch,
                    pass_micros(repeat, inbound, chunk, reads, count),
                    pass_micros(repeat, outbound, MESSAGE, count, count),
                )
            )
    return results


def pass_micros(repeat: int, call: Callable[[Any], object], arg: Any, calls: int, n: int) -> float:
    """µs per message of the best of *repeat* passes of *calls* calls ``call(arg)``, which
    carry *n* messages in all."""
    return best_of(repeat, lambda: [call(arg) for _ in range(calls)]) / n * 1e6


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
        rates = Spread.of(r.rate for r in rounds)
        server = median_of(rounds, lambda r: r.micros("server"))
        cpu = {name: cpu_share(rounds, name) for name in ("server", "load")}
        print(
            f"{LABELS.get(kind, kind):36s} {rates.median:8,.0f} {rates.low:8,.0f} "
            f"{rates.high:8,.0f} {rates.median / best:6.2f} {percentile_ms(rounds, 0.50):7.2f} "
            f"{percentile_ms(rounds, 0.95):7.2f} {percentile_ms(rounds, 0.99):7.2f} "
            f"{server:13.1f} {cpu['server'][0]:4.0f}/{cpu['server'][1]:<4.0f} "
            f"{cpu['load'][0]:3.0f}/{cpu['load'][1]:<3.0f}"
        )
    print(
        "(µs/msg: the server's CPU time per round trip, one message in and one out; "
        "%: the share of the window on a CPU / waiting for one)"
    )


def plot(results: dict[str, list[Round]], framing: list[Framing], args: argparse.Namespace) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    (rate_ax, cpu_ax), (cdf_ax, framing_ax) = axes
    kinds = list(results)
    labels = [LABELS.get(k, k) for k in kinds]
    color = colors(kinds)

    rates = [[r.rate for r in results[k]] for k in kinds]
    texts = [f"{Spread.of(v).median:,.0f}/s" for v in rates]
    bars(rate_ax, labels, rates, texts, color=[color[k] for k in kinds], room=1.3)
    rate_ax.set_xlabel("round trips per second (median; bars: min to max)")
    rate_ax.set_title(
        f"Throughput, {args.clients} picows clients, {args.rounds} round(s)", fontsize=10
    )

    cpu = [median_of(results[k], lambda r: r.micros("server")) for k in kinds]
    bars(cpu_ax, labels, [[c] for c in cpu], [f"{c:.1f}" for c in cpu],
         color=[color[k] for k in kinds], room=1.2)  # fmt: skip
    cpu_ax.set_xlabel("server CPU µs per round trip (median)")
    cpu_ax.set_title("Server CPU per message in + out", fontsize=10)

    plot_latencies(cdf_ax, results, LABELS, color)
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
    save_figure(fig, args.plot)


# ---------------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    options = Options(__doc__, quick="2 s runs, 1 round, a short framing pass")
    options.add("--clients", type=int, default=50, help="WebSocket clients")
    options.add("--firehose", type=int, default=1, help="messages in flight per client")
    options.add_window()
    options.add_contenders(
        KINDS, ",".join(DEFAULT_SERVERS), flag="--servers", what="server",
        help=f"comma-separated, from: {', '.join(KINDS)} (default: all but the deflate ones; "
        "empty: framing only)",
    )  # fmt: skip
    options.add_mode(
        "--framing-messages", full=20000, quick=4000, type=int,
        help="messages per framing pass (0: skip)",
    )  # fmt: skip
    options.add_plot(RESULTS / "websocket.png")
    args = options.parse()
    if args.clients < 1 or args.firehose < 1 or args.framing_messages < 0:
        options.error("--clients and --firehose must be at least 1, --framing-messages >= 0")
    return args


def main() -> None:
    args = parse()
    machine = Machine(", servers pinned to CPU 0, the load generator to CPU 1", WAITING)
    framing = measure_framing(args.framing_messages, 5) if args.framing_messages else []
    results = interleaved_rounds(args.kinds, args.rounds, partial(run_echo, args), show)

    machine.report()
    if results:
        print_table(results, args)
    if framing:
        print_framing(framing)
    if results:
        plot(results, framing, args)


if __name__ == "__main__":
    main()
