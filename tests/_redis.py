"""Real redis-servers for the tests, as fixtures (a test module loads them with
``pytest_plugins = ["tests._redis"]``):

- ``redis_url``: the URL of the session's server, emptied for each test;
- ``redis_session_server``: that server, to set it up or check it with a blocking command;
- ``redis_server``: a test's own server, to kill and restart (same port);
- ``redis_tls_server``: a test's own server speaking TLS only, with a self-signed
  certificate for ``localhost`` (``.tls[0]`` is the file to trust).

Needs Debian's ``redis-server`` (``apt-get install redis-server``). Without it the tests that
use these fixtures are skipped, with the reason in pytest's summary, unless
``STRANDS_REQUIRE_REDIS`` is set (``.ci/run`` sets it): then they fail, so that CI never
passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest

from ._net import self_signed_certificate

REQUIRE = "STRANDS_REQUIRE_REDIS"
#: How long a starting server has to answer PING.
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips the test (or fails it, under ``REQUIRE``) if there
    is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get(REQUIRE):
            pytest.fail(f"{message}, and {REQUIRE} is set", pytrace=False)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on 127.0.0.1, without persistence, that a test starts and stops
    (``with RedisServer() as server:`` starts it, and stops it at the end).

    *tls*: ``(cert_file, key_file)`` to listen with TLS only. The port is kept across
    :meth:`stop` and :meth:`start`, so a restarted server is found at the same URL.
    """

    def __init__(self, *, tls: tuple[str, str] | None = None) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="strands-redis-"))

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}"

    def start(self) -> None:
        """Start the server and return once it answers PING (or fail after
        :data:`START_TIMEOUT` seconds)."""
        log = self._dir / "redis.log"
        args: list[str] = [self.binary, "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self._dir), "--logfile", str(log)]
        if self.tls:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert]
            args += ["--tls-key-file", key, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == b"PONG":
                    return
            except OSError:
                if self.process.poll() is not None:
                    self.process = None
                    output = log.read_text(errors="replace") if log.exists() else ""
                    raise RuntimeError(f"redis-server exited:\n{output}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.005)  # polling a starting process: there is nothing to wait on

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): its connections break."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s), if it runs."""
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def command(self, *args: str | bytes) -> Any:
        """One command on a fresh blocking connection, for setting up and checking."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        reader = hiredis.Reader()
        with sock:
            sock.sendall(hiredis.pack_command(args))
            while (reply := reader.gets()) is False:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("redis-server closed the connection")
                reader.feed(data)
        return reply


@pytest.fixture(scope="session")
def redis_session_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (sync: pytest-trio runs no async session
    fixtures)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_session_server: RedisServer) -> str:
    """The URL of the session's redis-server, emptied (``FLUSHALL``, ``SCRIPT FLUSH``)."""
    redis_session_server.command("FLUSHALL")
    redis_session_server.command("SCRIPT", "FLUSH")
    return redis_session_server.url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that speaks TLS only, with a self-signed certificate for localhost."""
    with RedisServer(tls=make_certificate(tmp_path)) as server:
        yield server


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost (its own CA) and its key, as PEM files."""
    return self_signed_certificate(directory, "localhost")
