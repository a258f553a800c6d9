"""The servers the WebSocket benchmarks measure, each started as a process of a
:class:`_common.Processes`: our broker (``python -m strands_trio broker``, from this tree or
another), the reference Go broker, an echo backend (``_backends.py``) and a bare echo server
(``_servers.py``); and the broker's HTTP endpoints (``/healthz``, ``/metrics``), read over
loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from _common import (
    HERE,
    HOST,
    START_TIMEOUT,
    Options,
    Processes,
    accepts,
    free_port,
    read_line,
    wait_for,
)

BACKENDS = HERE / "_backends.py"
SERVERS = HERE / "_servers.py"
READY_LINE = re.compile(rb"ws://[^:]+:(\d+)/ws/\.\.\., backends on [^ ]+:(\d+)")


@attrs.frozen
class Broker:
    proc: subprocess.Popen[bytes]
    ws_port: int
    tcp_port: int
    has_healthz: bool


def tree_env(tree: Path | None) -> tuple[dict[str, str] | None, Path | None]:
    """The environment and working directory that run ``python -m strands_trio`` from the
    source *tree* (``None``: this one, as installed)."""
    if tree is None:
        return None, None
    return {**os.environ, "PYTHONPATH": str(tree)}, tree


def add_previous(options: Options) -> None:
    """``--previous DIR``: a source tree whose broker to compare, checked once parsed."""
    options.add("--previous", type=Path, help="a source tree whose broker to compare")

    def check(args: argparse.Namespace) -> None:
        if args.previous is not None and not args.previous.is_dir():
            options.error(f"--previous {args.previous}: not a directory")
        if args.previous is not None:
            check_tree(args.previous)

    options.validate(check)


def check_tree(tree: Path) -> None:
    """Fail unless ``strands_trio`` imports from *tree* when run with :func:`tree_env`."""
    env, cwd = tree_env(tree)
    where = subprocess.run(
        [sys.executable, "-c", "import strands_trio; print(strands_trio.__file__)"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if not where.stdout.strip().startswith(str(tree.resolve())):
        sys.exit(f"{tree}: strands_trio does not import from there: {where.stdout}{where.stderr}")


def start_strands_broker(
    procs: Processes,
    *,
    max_connections: int,
    nofile: int = 0,
    tree: Path | None = None,
    name: str = "broker",
    cpu: int | None = 0,
    extra: tuple[str, ...] = (),
) -> Broker:
    """Start a broker as *name* (``python -m strands_trio broker``, from the source *tree* if
    given, with the *extra* flags) and wait until it listens."""
    env, cwd = tree_env(tree)
    command = [
        sys.executable, "-m", "strands_trio", "broker",
        "--ws-host", HOST, "--ws-port", "0", "--tcp-port", "0",
        "--max-connections", str(max_connections),
        "--max-connections-per-ip", str(max_connections),
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    proc = procs.start(name, command, cpu=cpu, nofile=nofile, env=env, cwd=cwd)
    log = procs.dir / f"{name}.log"
    match = wait_for(
        f"{name} to listen", lambda: READY_LINE.search(log.read_bytes()), procs, START_TIMEOUT
    )
    assert match is not None
    return Broker(proc, int(match[1]), int(match[2]), has_healthz=True)


def start_reference_broker(procs: Processes, binary: str, *, nofile: int = 0) -> Broker:
    """Start the reference Go broker on CPU 0 and wait until it listens."""
    ws_port, tcp_port = free_port(), free_port()
    env = {**os.environ, "PYSTRAND_WS_PORT": str(ws_port), "PYSTRAND_TCP_PORT": str(tcp_port)}
    proc = procs.start("broker", [binary], cpu=0, nofile=nofile, env=env)
    wait_for("the reference broker to listen", lambda: accepts(ws_port), procs, START_TIMEOUT)
    return Broker(proc, ws_port, tcp_port, has_healthz=False)


def start_backend(
    procs: Processes, kind: str, broker: Broker, *extra: str
) -> subprocess.Popen[bytes]:
    """Start an echo backend of *kind* (``_backends.py``, with the *extra* arguments) on
    CPU 1 and wait until the broker has it (the reference broker has no ``/healthz``: then the
    load generator's handshakes are retried until it is there)."""
    command = [sys.executable, str(BACKENDS), kind, str(broker.tcp_port), *extra]
    proc = procs.start("backend", command, cpu=1)
    if broker.has_healthz:
        wait_healthz(procs, broker.ws_port, "the backend to connect", lambda h: bool(h["backends"]))
    else:
        time.sleep(1.0)
    return proc


def start_echo_server(
    procs: Processes, kind: str, name: str = "server"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the echo server *kind* of ``_servers.py`` as *name* on CPU 0; it and its port."""
    command = [sys.executable, str(SERVERS), kind]
    proc = procs.start(name, command, cpu=0, stdout=subprocess.PIPE)
    line = read_line(proc, time.monotonic() + START_TIMEOUT).strip()
    if not line.isdigit():
        raise RuntimeError(f"the {kind} server said {line!r}\n{procs.log(name)}")
    return proc, int(line)


# ---------------------------------------------------------------------- HTTP


def http_get(port: int, path: str) -> str | None:
    """The body of ``GET path`` on loopback *port*, or ``None`` unless it answered 200."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode() if head.startswith(b"HTTP/1.1 200") else None


def http_get_json(port: int, path: str) -> dict[str, Any] | None:
    """The JSON body of ``GET path``, or ``None`` if it cannot be had."""
    body = http_get(port, path)
    return None if body is None else dict(json.loads(body))


def wait_healthz(
    procs: Processes,
    port: int,
    what: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = START_TIMEOUT,
) -> None:
    """Wait until the ``/healthz`` of the broker on *port* passes *check*."""

    def ready() -> bool:
        health = http_get_json(port, "/healthz")
        return health is not None and check(health)

    wait_for(what, ready, procs, timeout)
