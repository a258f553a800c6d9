"""Codec micro-benchmark: what each way of decoding and encoding a frame costs, side by side.

    python benchmarks/codec.py            # a few seconds
    python benchmarks/codec.py --quick    # a smoke run

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

import json
from collections.abc import Callable

import orjson
from _common import RESULTS, Options, bars, best_of, pyplot, save_figure
from _replay import frame_block

from strands_trio.protocol import (
    FrameDecoder,
    MessageToConnection,
    NewMessage,
    encode,
    encode_message_to_connection,
)
from strands_trio.protocol._codec import _FAST, _FAST_PATHS, Role, _new_message


def per_frame(fn: Callable[[], object], frames: int, repeat: int) -> float:
    """Microseconds per frame of the best of *repeat* calls of *fn*, on *frames* frames."""
    return best_of(repeat, fn) / frames * 1e6


def main() -> None:
    options = Options(__doc__, quick="3 runs per figure")
    options.add_mode("--repeat", full=30, quick=3, type=int, help="runs per figure (best kept)")
    options.add_plot(RESULTS / "codec.png")
    args = options.parse()

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

    fig, ax = pyplot().subplots(figsize=(8, 4))
    labels = [f"{step}: {how}" for step, how, _ in rows]
    values = [[value] for _, _, value in rows]
    bars(ax, labels, values, [f"{v:.2f}" for [v] in values], color="#55a868", room=1.2)
    ax.set_xlabel("microseconds per frame (best of runs)")
    ax.set_title("Codec costs per new_message frame", fontsize=10)
    save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
