"""``strands-trio broker``: flags and environment, clear one-line errors, and a graceful stop
on SIGINT in a real process."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys

import pytest
import trio

from strands_trio.__main__ import build_parser, main
from strands_trio._cliutil import JsonFormatter
from strands_trio.broker._cli import config_from_args

from .._net import read_all, reap


def parse(*argv: str) -> object:
    return build_parser().parse_args(["broker", *argv])


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's environment variables set the defaults, flags win, and the secret comes
    from STRANDS_BROKER_SECRET only."""
    monkeypatch.setenv("PYSTRAND_WS_PORT", "9000")
    monkeypatch.setenv("PYSTRAND_QUEUE_SIZE", "7")
    monkeypatch.setenv("STRANDS_BROKER_SECRET", "a long enough secret")
    config = config_from_args(parse("--tcp-port", "9001", "--allowed-origin", "https://a.example"))  # type: ignore[arg-type]
    assert (config.ws_port, config.tcp_port, config.queue_size) == (9000, 9001, 7)
    assert config.allowed_origins == ("https://a.example",)
    assert config.backend_secret == "a long enough secret"
    assert config.backend_host == "127.0.0.1"
    timeouts = config_from_args(parse("--handshake-timeout", "2.5", "--shutdown-timeout", "1"))  # type: ignore[arg-type]
    assert (timeouts.handshake_timeout, timeouts.shutdown_timeout) == (2.5, 1.0)


def test_bad_values_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad flag value or environment variable exits with one line, not a traceback."""
    with pytest.raises(SystemExit, match="'queue_size' must be"):
        config_from_args(parse("--queue-size", "-1"))  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="trusted_proxies"):
        config_from_args(parse("--trusted-proxy", "nonsense"))  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="shutdown_timeout"):
        config_from_args(parse("--shutdown-timeout", "0"))  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="certificate"):
        config_from_args(parse("--certfile", "/nonexistent.pem"))  # type: ignore[arg-type]
    monkeypatch.setenv("PYSTRAND_TCP_PORT", "eighty")
    with pytest.raises(SystemExit, match="PYSTRAND_TCP_PORT must be an integer"):
        config_from_args(parse())  # type: ignore[arg-type]
    assert build_parser().parse_args(["demo"]).command == "demo"  # other commands unaffected


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--ws-port", "70000"], "argument --ws-port: port 70000 is out of range (0 to 65535)"),
        (["--tcp-port", "-1"], "argument --tcp-port: port -1 is out of range (0 to 65535)"),
        (["--tcp-port", "eighty"], "argument --tcp-port: not a port number: 'eighty'"),
        (["--ws-host", "ws://example.com"], "argument --ws-host: not a host name or address"),
        (["--backend-host", "localhost:8081"], "give the port with its own option"),
        (["--ws-host", ""], "argument --ws-host: not a host name or address: ''"),
    ],
)
def test_bad_port_or_host_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    """A bad port or host is refused by the parser in one line, exit status 2, no usage."""
    with pytest.raises(SystemExit) as exit_:
        main(["broker", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("strands-trio broker: error: ")
    assert error in err
    assert err.endswith("(see strands-trio broker --help)\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize("listener", ["ws", "tcp"])
def test_port_in_use_names_the_listener(capsys: pytest.CaptureFixture[str], listener: str) -> None:
    """A port already in use is one line naming the listener and its address, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"ws": "0", "tcp": "0", listener: str(port)}
        argv = ["--ws-host", "127.0.0.1", "--ws-port", ports["ws"], "--tcp-port", ports["tcp"]]
        status = main(["broker", *argv])
    assert status == 1
    what = "WebSocket clients" if listener == "ws" else "backends"
    assert capsys.readouterr().err == (
        f"strands-trio broker: cannot listen for {what} on 127.0.0.1:{port}: "
        "address already in use\n"
    )


def test_same_port_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """The same port for both listeners is refused before binding, saying so."""
    assert main(["broker", "--ws-port", "8090", "--tcp-port", "8090"]) == 1
    assert capsys.readouterr().err == (
        "strands-trio broker: cannot listen: the WebSocket port and the backends' port are "
        "both 8090; give them different ports (--ws-port, --tcp-port)\n"
    )


async def test_sigint_stops_the_broker_gracefully() -> None:
    """The command serves until SIGINT, then exits with status 0 and no traceback."""
    command = [sys.executable, "-m", "strands_trio", "broker", "--ws-host", "127.0.0.1"]
    command += ["--ws-port", "0", "--tcp-port", "0"]
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            assert process.stdout is not None
            banner = b""
            while b"\n" not in banner:
                banner += await process.stdout.receive_some()
            assert b"WebSocket clients on ws://127.0.0.1:" in banner
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            assert process.stderr is not None
            errors = await read_all(process.stderr)
            assert b"Traceback" not in errors
            assert b"SIGINT received: shutting down" in errors
    finally:
        await reap(process)


async def test_log_format_json() -> None:
    """--log-format json writes one JSON object per line on stderr, with time, level, logger
    and message."""
    command = [sys.executable, "-m", "strands_trio", "broker", "--ws-host", "127.0.0.1"]
    command += ["--ws-port", "0", "--tcp-port", "0", "--log-format", "json"]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with trio.fail_after(20):
            assert process.stdout is not None
            assert process.stderr is not None
            banner = b""
            while b"\n" not in banner:
                chunk = await process.stdout.receive_some()
                assert chunk, banner
                banner += chunk
            process.send_signal(signal.SIGINT)
            errors = (await read_all(process.stderr)).decode()
            assert await process.wait() == 0
    finally:
        await reap(process)
    lines = [json.loads(line) for line in errors.splitlines()]
    assert lines
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert {
        "level": "INFO",
        "logger": "strands_trio.broker",
        "message": "SIGINT received: shutting down",
    }.items() <= lines[0].items()
    assert lines[0]["time"].endswith("+00:00")


def test_json_formatter_fields() -> None:
    """Fields given with extra= (the Logging middleware's) and an exception's traceback go
    into the object; a value JSON cannot hold is written as its repr."""
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "strands_trio.events", logging.INFO, "x.py", 1, "%s ok", ("m",), None
    )
    record.outcome = "rate_limited"
    record.duration_ms = 0.5
    record.odd = {1, 2}
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "m ok"
    assert (entry["outcome"], entry["duration_ms"], entry["odd"]) == ("rate_limited", 0.5, "{1, 2}")
    assert "args" not in entry
    assert "msg" not in entry
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "x.py", 1, "failed", (), sys.exc_info())
    entry = json.loads(formatter.format(record))
    assert entry["exception"].endswith("ValueError: bad")
    assert "\n" not in formatter.format(record)
