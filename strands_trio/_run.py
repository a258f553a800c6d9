"""``strands-trio run module:app``: a user's backend against a broker, from the command line."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio

from ._app import StrandsApp
from ._client import StrandsClient
from ._cliutil import add_log_options, configure_logging, host_arg, port_arg
from ._config import SECRET_VARIABLE
from ._errors import BrokerConnectionError
from ._util import serve_until_signal

__all__ = ["add_run_command", "load_target", "run_command"]

logger = logging.getLogger("strands_trio.run")


DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8081


class TargetError(Exception):
    """A ``module:attribute`` that does not name a backend; the message is the one line."""


def add_run_command(commands: Any) -> None:
    """Add the ``run`` subcommand to the ``strands-trio`` parser."""
    parser = commands.add_parser(
        "run",
        help="run your StrandsApp or StrandsClient against a broker",
        description=(
            "Import TARGET (module:attribute, as uvicorn does), a StrandsApp, a StrandsClient "
            "subclass or instance (with --factory: a function that takes no arguments and "
            "returns one of those), connect it to the broker at HOST:PORT and serve until "
            "Ctrl-C or SIGTERM, then shut down gracefully. The broker must be reachable at "
            "start; after that, a lost connection is made again with backoff (the first "
            "failed attempt of an outage is logged, the next ones only at DEBUG)."
        ),
        epilog=(
            f"Environment: {SECRET_VARIABLE}, the secret of a strands-trio broker started with "
            "one, sent when the target's ClientConfig sets no broker_secret. Exit status: 0 "
            "after a clean stop, 1 when the broker cannot be reached, 2 for a bad TARGET."
        ),
    )
    parser.add_argument("target", metavar="TARGET", help="module:attribute, e.g. chat:app")
    parser.add_argument(
        "--factory",
        action="store_true",
        help="TARGET is a function (plain, not async) that takes no arguments and builds the "
        "StrandsApp or StrandsClient; it is called once, before the event loop starts",
    )
    parser.add_argument(
        "--host",
        type=host_arg,
        help=f"broker host (default: {DEFAULT_HOST}, or a StrandsClient instance's own)",
    )
    parser.add_argument(
        "--port",
        type=port_arg,
        help=f"broker's backend port (default: {DEFAULT_PORT}, or a StrandsClient instance's own)",
    )
    add_log_options(parser)


def load_target(
    target: str, *, factory: bool = False
) -> StrandsApp | StrandsClient | type[StrandsClient]:
    """Import ``module:attribute`` (the current directory first on the path); with *factory*,
    call it (a plain function of no arguments) and take what it returns.

    Raises:
        TargetError: not ``module:attribute``, the import fails, the attribute is missing, the
            factory is not a plain callable or raises, or the result is not a StrandsApp, a
            StrandsClient subclass or instance.
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
    if factory:
        value = _call_factory(target, value)
    if isinstance(value, StrandsApp | StrandsClient) or (
        isinstance(value, type) and issubclass(value, StrandsClient)
    ):
        return value
    made = " returned" if factory else " is"
    raise TargetError(
        f"{target}{made} a {type(value).__name__}, not a StrandsApp or StrandsClient"
        + ("" if factory or not callable(value) else " (a factory? add --factory)")
    )


def _call_factory(target: str, factory: Any) -> Any:
    """What the ``--factory`` function returns (it runs before ``trio.run``, so it is a plain
    function: an async one could not be awaited here, and is refused rather than guessed)."""
    if not callable(factory) or isinstance(factory, type):
        raise TargetError(f"--factory: {target} is not a function")
    if inspect.iscoroutinefunction(factory):
        raise TargetError(f"--factory: {target} is async; make it a plain function")
    try:
        return factory()
    except Exception as exc:
        raise TargetError(f"--factory: {target}() raised {type(exc).__name__}: {exc}") from exc


def run_command(args: argparse.Namespace) -> int:
    """Run the target until SIGINT or SIGTERM; return the exit status."""
    configure_logging(args)
    host, port = args.host, args.port
    try:
        client_or_app = prepare(load_target(args.target, factory=args.factory), host, port)
        if isinstance(client_or_app, StrandsClient):
            host, port = client_or_app.host, client_or_app.port
        else:
            host = DEFAULT_HOST if host is None else host
            port = DEFAULT_PORT if port is None else port
        trio.run(partial(_run, client_or_app, host, port))
    except TargetError as exc:
        print(f"strands-trio run: {exc}", file=sys.stderr)
        return 2
    except BrokerConnectionError as exc:
        cause = exc.__cause__
        why = getattr(cause, "strerror", None) or cause or exc
        print(f"strands-trio run: cannot reach the broker at {host}:{port}: {why}", file=sys.stderr)
        return 1
    return 0


def prepare(
    target: StrandsApp | StrandsClient | type[StrandsClient], host: str | None, port: int | None
) -> StrandsApp | StrandsClient:
    """The app or client to run: a class is made with the address, an instance keeps its own;
    its config fails fast when no broker answers at start, and gets the broker secret from
    the environment when it has none.

    Raises:
        TargetError: *target* is an instance made for another address than the flags give.
    """
    if isinstance(target, type):
        target = target(
            DEFAULT_HOST if host is None else host, DEFAULT_PORT if port is None else port
        )
    elif isinstance(target, StrandsClient) and (
        (host is not None and host != target.host) or (port is not None and port != target.port)
    ):
        raise TargetError(
            f"the StrandsClient instance is made for {target.host}:{target.port}; to choose "
            "the address with --host/--port, point TARGET at its class or at a StrandsApp"
        )
    # A broker that is not there at start is an error (exit status 1), not a retry loop; after
    # the first connection, the target's own reconnection settings apply.
    config = attrs.evolve(target.config, wait_for_broker=False)
    secret = os.environ.get(SECRET_VARIABLE)
    if secret and config.broker_secret is None:
        config = attrs.evolve(config, broker_secret=secret)
    target.config = config
    return target


async def _run(target: StrandsApp | StrandsClient, host: str, port: int) -> None:
    start: Callable[..., Awaitable[None]]
    if isinstance(target, StrandsApp):
        start = partial(target.serve, host, port)
    else:
        start = target.run
    await serve_until_signal(start, logger)
