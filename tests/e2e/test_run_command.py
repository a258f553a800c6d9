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
import trio.testing

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


def test_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--factory calls a plain function for the app; an async one, a non-function, one that
    raises, or one that returns something else is a one-line TargetError; a factory given
    without --factory gets a hint."""
    (tmp_path / "factories.py").write_text(
        "from strands_trio import StrandsApp\n"
        "def make(): return StrandsApp()\n"
        "async def amake(): return StrandsApp()\n"
        "def broken(): raise RuntimeError('no config')\n"
        "def wrong(): return 42\n"
        "value = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(load_target("factories:make", factory=True), StrandsApp)
    for target, message in [
        ("factories:amake", "factories:amake is async; make it a plain function"),
        ("factories:value", "factories:value is not a function"),
        ("factories:broken", r"factories:broken\(\) raised RuntimeError: no config"),
        ("factories:wrong", "factories:wrong returned a int, not a StrandsApp"),
    ]:
        with pytest.raises(TargetError, match=message):
            load_target(target, factory=True)
    with pytest.raises(TargetError, match=r"a function, not a StrandsApp .*add --factory"):
        load_target("factories:make")


def test_bad_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """run and demo refuse a bad port in one line, exit status 2 (demo --ws-port 99999)."""
    for argv in (["demo", "--ws-port", "99999"], ["run", "x:app", "--port", "99999"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "port 99999 is out of range (0 to 65535)" in err
        assert err.count("\n") == 1


def test_demo_same_port_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo given one port for both listeners says so instead of binding."""
    assert main(["demo", "--ws-port", "8090", "--tcp-port", "8090"]) == 1
    assert "--ws-port and --tcp-port are both 8090" in capsys.readouterr().err


async def test_unreachable_is_said_once_then_quiet(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A backend that keeps retrying says "cannot connect" (WARNING) and "reconnecting"
    (INFO) once per outage; the next attempts and waits are DEBUG."""

    async def refuse() -> trio.abc.Stream:
        raise ConnectionRefusedError(111, "Connection refused")

    client = StrandsClient(connect=refuse, config=ClientConfig(reconnect_jitter=0))
    caplog.set_level("DEBUG", "strands_trio")
    with trio.move_on_after(60):
        await client.run()
    attempts = [r for r in caplog.records if "cannot connect to the broker" in r.getMessage()]
    assert len(attempts) >= 3
    assert [r.levelname for r in attempts[:2]] == ["WARNING", "DEBUG"]
    assert {r.levelname for r in attempts[1:]} == {"DEBUG"}
    waits = [r for r in caplog.records if "reconnecting to the broker" in r.getMessage()]
    assert [r.levelname for r in waits[:2]] == ["INFO", "DEBUG"]
    assert {r.levelname for r in waits[1:]} == {"DEBUG"}
