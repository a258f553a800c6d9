"""The ``strands-trio`` command (also ``python -m strands_trio``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strands-trio",
        description="Trio-native backends for the PyStrands real-time broker.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "demo",
        help="run the example chat backend against an in-process broker",
        description=(
            "Start an in-memory broker that behaves like the reference one on a loopback "
            "TCP port, connect the example chat backend to it over TCP, play a scripted "
            "conversation between simulated WebSocket clients, print it, and exit."
        ),
    )
    from ._run import add_run_command
    from .broker._cli import add_broker_command

    add_broker_command(commands)
    add_run_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        trio.run(run_demo)
    elif args.command == "run":
        from ._run import run_command

        return run_command(args)
    elif args.command == "broker":
        from .broker._cli import run_broker_command

        return run_broker_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
