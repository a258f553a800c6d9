"""Codec micro-benchmark: what each way of decoding and encoding a frame costs, side by side.

    python benchmarks/codec.py

The numbers behind the codec's choices (docs/dependencies.md): orjson against the stdlib json
module, cattrs structuring against the hand-written hot path, attrs' frozen ``__init__``
against filling a frame's slots, and three ways to encode the reply frame. Each is timed
over the 1000 new_message frames of the replay benchmark (100 clients, the reference broker's
nested metadata), best of several runs, in microseconds per frame. Encodings are timed in
place: replies are kept and joined as the client's outbox does, which is where allocation
patterns show.

Prints a table and writes a PNG plot (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from strands_trio.protocol import (
    FrameDecoder,
    MessageToConnection,
    NewMessage,
    encode,
    encode_message_to_connection,
)
from strands_trio.protocol._codec import _FAST, _FAST_PATHS, Role, _new_message

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from replay import frame_block  # noqa: E402


def per_frame(fn: Callable[[], object], frames: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "codec.png")
    args = parser.parse_args()

    block = frame_block()
    lines = block.splitlines()
    count = len(lines)
    objects = [orjson.loads(line) for line in lines]
    params = [(obj["params"] | {"request_id": obj["request_id"]}) for obj in objects]
    structure = _FAST.get_structure_hook(NewMessage)
    fast = _FAST_PATHS[Role.BACKEND]["new_message"]
    build = _new_message
    decoder = FrameDecoder()
    frames: list[NewMessage] = decoder.feed(block)  # type: ignore[assignment]

    def replies(encode_one: Callable[[NewMessage, int], bytes]) -> Callable[[], object]:
        def run() -> object:
            return b"".join([encode_one(frame, n) for n, frame in enumerate(frames)])

        return run

    rows: list[tuple[str, str, float]] = [
        (
            "parse",
            "json.loads (stdlib)",
            per_frame(lambda: [json.loads(x) for x in lines], count, args.repeat),
        ),
        (
            "parse",
            "orjson.loads",
            per_frame(lambda: [orjson.loads(x) for x in lines], count, args.repeat),
        ),
        (
            "structure",
            "cattrs converter (strict hooks)",
            per_frame(lambda: [structure(p, NewMessage) for p in params], count, args.repeat),
        ),
        (
            "structure",
            "hand-written hot path",
            per_frame(lambda: [fast(p, p["request_id"]) for p in params], count, args.repeat),
        ),
        (
            "build",
            "NewMessage: attrs' frozen __init__",
            per_frame(
                lambda: [
                    NewMessage(request_id=f.request_id, context=f.context, message=f.message)
                    for f in frames
                ],
                count,
                args.repeat,
            ),
        ),
        (
            "build",
            "NewMessage: filled through slots",
            per_frame(
                lambda: [build(f.request_id, f.context, f.message) for f in frames],
                count,
                args.repeat,
            ),
        ),
        (
            "decode",
            "FrameDecoder.feed (all of it)",
            per_frame(lambda: decoder.feed(block), count, args.repeat),
        ),
        (
            "encode",
            "frame + cattrs + orjson",
            per_frame(
                replies(
                    lambda f, n: encode(
                        MessageToConnection(
                            request_id=str(n), conn_id=f.context.client_id, message=f.message
                        )
                    )
                ),
                count,
                args.repeat,
            ),
        ),
        (
            "encode",
            "dict + orjson.dumps",
            per_frame(
                replies(
                    lambda f, n: orjson.dumps(
                        {
                            "request_id": str(n),
                            "action": "message_to_connection",
                            "params": {"conn_id": f.context.client_id, "message": f.message},
                        },
                        option=orjson.OPT_APPEND_NEWLINE,
                    )
                ),
                count,
                args.repeat,
            ),
        ),
        (
            "encode",
            "encode_message_to_connection",
            per_frame(
                replies(
                    lambda f, n: encode_message_to_connection(
                        str(n), f.context.client_id, f.message
                    )
                ),
                count,
                args.repeat,
            ),
        ),
    ]
    size = len(block) // count
    print(f"Codec: {count} new_message frames (~{size} bytes each), best of {args.repeat}")
    print(f"{'step':10s} {'how':34s} {'us/frame':>9s}")
    for step, how, value in rows:
        print(f"{step:10s} {how:34s} {value:9.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{step}: {how}" for step, how, _ in rows]
    bars = ax.barh(labels, [value for _, _, value in rows], color="#55a868")
    for bar, (_, _, value) in zip(bars, rows, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("microseconds per frame (best of runs)")
    ax.set_title("Codec costs per new_message frame", fontsize=10)
    ax.set_xlim(0, max(value for _, _, value in rows) * 1.2)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
