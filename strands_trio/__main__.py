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
        epilog="Run 'strands-trio COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the broker, a chat backend and its page: open the printed URL",
        description=(
            "One process, one nursery: the Trio broker, a chat backend with the built-in "
            "middleware (JWT auth, rate limit, logging, roles, typed messages) and the chat "
            "page at /. Open the printed URL in two browser tabs; Ctrl-C stops it. Needs the "
            "auth extra: pip install 'strands-trio[auth]'. With --script: a scripted "
            "conversation against an in-memory broker, printed, then exit."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    demo.add_argument(
        "--ws-port", type=int, default=8080, help="page and WebSocket port (default: %(default)s)"
    )
    demo.add_argument("--tcp-port", type=int, default=0, help="backend port (default: a free one)")
    demo.add_argument(
        "--script", action="store_true", help="play the scripted conversation and exit"
    )
    half = demo.add_mutually_exclusive_group()
    half.add_argument(
        "--broker-only",
        action="store_true",
        help="run only the broker and the page (the backend runs with --backend-only); "
        "both need the same $STRANDS_DEMO_SECRET",
    )
    half.add_argument(
        "--backend-only",
        action="store_true",
        help="run only the chat backend, connecting to the broker on --host:--tcp-port",
    )
    from ._run import add_run_command
    from .broker._cli import add_broker_command

    add_broker_command(commands)
    add_run_command(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strands-trio")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo" and args.script:
        from ._demo import run_demo

        trio.run(run_demo)
    elif args.command == "demo":
        return _demo_server(args)
    elif args.command == "run":
        from ._run import run_command

        return run_command(args)
    elif args.command == "broker":
        from .broker._cli import run_broker_command

        return run_broker_command(args)
    return 0


def _demo_server(args: argparse.Namespace) -> int:
    try:
        import jwt  # noqa: F401 - the demo's tokens
    except ImportError:
        print(
            "strands-trio demo: needs the auth extra: pip install 'strands-trio[auth]'",
            file=sys.stderr,
        )
        return 1
    import errno
    import os

    from ._demo_chat import SECRET_VARIABLE, run_demo_server

    part = "broker" if args.broker_only else "backend" if args.backend_only else "both"
    secret = os.environ.get(SECRET_VARIABLE)
    if part != "both" and not secret:
        print(
            f"strands-trio demo: --{part}-only needs ${SECRET_VARIABLE}, the same in the "
            "broker's and the backend's process (the broker issues tokens, the backend "
            "verifies them)",
            file=sys.stderr,
        )
        return 1
    if secret is not None and len(secret.encode()) < 32:
        print(
            f"strands-trio demo: ${SECRET_VARIABLE} is too short: 32 bytes at least",
            file=sys.stderr,
        )
        return 1
    if part == "backend" and args.tcp_port == 0:
        print("strands-trio demo: --backend-only needs --tcp-port, the broker's", file=sys.stderr)
        return 1
    try:
        run_demo_server(args.host, args.ws_port, args.tcp_port, part, secret)
    except OSError as exc:
        what = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        print(f"strands-trio demo: cannot listen: {what}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
