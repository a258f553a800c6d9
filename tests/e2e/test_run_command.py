"""``strands-trio run module:app``: loading the target, one-line errors, and a real run
against our broker, stopped by SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from strands_trio import ClientConfig, StrandsApp, StrandsClient
from strands_trio.__main__ import main
from strands_trio._run import TargetError, load_target, prepare
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker

from .._net import read_all, reap

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-secret-of-16+-characters"


def test_load_target() -> None:
    """module:attribute names an app, a client class or a client; anything else is a clear
    error."""
    assert isinstance(load_target("docs.examples.chat_app:app"), StrandsApp)
    assert isinstance(load_target("docs.examples.echo_client:ChatBackend"), type)
    for target, message in [
        ("docs.examples.chat_app", "must be module:attribute"),
        ("no_such_module:app", "cannot import 'no_such_module'"),
        ("docs.examples.chat_app:nope", "has no attribute 'nope'"),
        ("docs.examples.chat_app:admit", "is a function, not a StrandsApp"),
    ]:
        with pytest.raises(TargetError, match=message):
            load_target(target)


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad target exits 2 and an unreachable broker 1, each with one line on stderr."""
    assert main(["run", "nowhere:app"]) == 2
    assert capsys.readouterr().err.startswith("strands-trio run: cannot import 'nowhere'")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (
        main(["run", "docs.examples.chat_app:app", "--host", "127.0.0.1", "--port", str(port)]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(f"strands-trio run: cannot reach the broker at 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_prepare_address_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client class gets the flags' address, an instance keeps its own (flags naming another
    are an error), and the secret from the environment fills a config that has none."""
    monkeypatch.setenv("STRANDS_BROKER_SECRET", "from-env")
    client = prepare(load_target("docs.examples.echo_client:ChatBackend"), "broker.test", None)
    assert isinstance(client, StrandsClient)
    assert (client.host, client.port) == ("broker.test", 8081)
    assert client.config.broker_secret == "from-env"
    assert not client.config.wait_for_broker  # a broker missing at start is exit status 1
    instance = StrandsClient("10.0.0.1", 9000, config=ClientConfig(broker_secret="own"))
    assert prepare(instance, None, 9000) is instance
    assert instance.config.broker_secret == "own"
    with pytest.raises(TargetError, match=r"instance is made for 10\.0\.0\.1:9000"):
        prepare(instance, "localhost", None)
    monkeypatch.delenv("STRANDS_BROKER_SECRET")
    app = prepare(StrandsApp(), None, None)
    assert app.config.broker_secret is None


async def test_run_against_our_broker_until_sigint(nursery: trio.Nursery) -> None:
    """The command serves the app against a broker that wants a secret, given in the
    environment, then stops on SIGINT with status 0."""
    config = BrokerConfig(
        ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None, backend_secret=SECRET
    )
    broker: BrokerAddress = await nursery.start(serve_broker, config)
    command = [sys.executable, "-m", "strands_trio", "run", "docs.examples.chat_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(broker.tcp_port)]
    process = await trio.lowlevel.open_process(
        command,
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "STRANDS_BROKER_SECRET": SECRET},
    )
    try:
        with trio.fail_after(20):
            await broker.hub.wait_backends(1)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            assert process.stderr is not None
            errors = await read_all(process.stderr)
            assert b"Traceback" not in errors
    finally:
        await reap(process)
