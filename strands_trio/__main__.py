"""The ``strands-trio`` command (also ``python -m strands_trio``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio


class _Parser(argparse.ArgumentParser):
    """An argument error is one line on stderr (the usage is a ``--help`` away), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ._cliutil import add_log_options, host_arg, port_arg

    parser = _Parser(
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
    demo.add_argument(
        "--host", type=host_arg, default="127.0.0.1", help="interface (default: %(default)s)"
    )
    demo.add_argument(
        "--ws-port",
        type=port_arg,
        default=8080,
        help="page and WebSocket port (default: %(default)s)",
    )
    demo.add_argument(
        "--tcp-port", type=port_arg, default=0, help="backend port (default: a free one)"
    )
    demo.add_argument(
        "--script", action="store_true", help="play the scripted conversation and exit"
    )
    add_log_options(demo)
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
    import os

    from ._cliutil import configure_logging
    from ._demo_chat import SECRET_VARIABLE, run_demo_server
    from .broker._cli import listen_error_words

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
    if part != "backend" and args.ws_port == args.tcp_port != 0:
        print(
            f"strands-trio demo: cannot listen: --ws-port and --tcp-port are both "
            f"{args.ws_port}; give them different ports",
            file=sys.stderr,
        )
        return 1
    configure_logging(args)  # before the demo's own basicConfig, which then does nothing
    try:
        run_demo_server(args.host, args.ws_port, args.tcp_port, part, secret)
    except OSError as exc:
        print(f"strands-trio demo: {listen_error_words(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
