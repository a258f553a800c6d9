"""``strands-trio run module:app``: a user's backend against a broker, from the command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from ._app import StrandsApp
from ._client import StrandsClient
from ._util import serve_until_signal

__all__ = ["add_run_command", "load_target", "run_command"]

logger = logging.getLogger("strands_trio.run")


class TargetError(Exception):
    """A ``module:attribute`` that does not name a backend; the message is the one line."""


def add_run_command(commands: Any) -> None:
    """Add the ``run`` subcommand to the ``strands-trio`` parser."""
    parser = commands.add_parser(
        "run",
        help="run your StrandsApp or StrandsClient against a broker",
        description=(
            "Import TARGET (module:attribute, as uvicorn does), a StrandsApp, a StrandsClient "
            "subclass or instance, connect it to the broker at HOST:PORT and serve until "
            "Ctrl-C or SIGTERM, then shut down gracefully. The broker must be reachable at "
            "start; after that, a lost connection is made again with backoff."
        ),
    )
    parser.add_argument("target", metavar="TARGET", help="module:attribute, e.g. chat:app")
    parser.add_argument("--host", default="localhost", help="broker host (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8081, help="broker's backend port (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="(default: %(default)s)",
    )


def load_target(target: str) -> StrandsApp | StrandsClient | type[StrandsClient]:
    """Import ``module:attribute`` (the current directory first on the path).

    Raises:
        TargetError: not ``module:attribute``, the import fails, the attribute is missing, or
            it is not a StrandsApp, a StrandsClient subclass or instance.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise TargetError(f"TARGET must be module:attribute, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        value: Any = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise TargetError(f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(value, StrandsApp | StrandsClient) or (
        isinstance(value, type) and issubclass(value, StrandsClient)
    ):
        return value
    raise TargetError(f"{target} is a {type(value).__name__}, not a StrandsApp or StrandsClient")


def run_command(args: argparse.Namespace) -> int:
    """Run the target until SIGINT or SIGTERM; return the exit status."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        target = load_target(args.target)
        trio.run(partial(_run, target, args.host, args.port))
    except TargetError as exc:
        print(f"strands-trio run: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"strands-trio run: cannot reach the broker at {args.host}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _run(
    target: StrandsApp | StrandsClient | type[StrandsClient], host: str, port: int
) -> None:
    # One attempt first, so that a broker that is not there is an error, not a retry loop.
    stream = await trio.open_tcp_stream(host, port)
    await stream.aclose()
    if isinstance(target, type):
        target = target(host, port)
    start: Callable[..., Awaitable[None]]
    if isinstance(target, StrandsApp):
        start = partial(target.serve, host, port)
    else:
        if (target.host, target.port) != (host, port):
            logger.info("using the client's own broker address %s:%s", target.host, target.port)
        start = target.run
    await serve_until_signal(start, logger)
