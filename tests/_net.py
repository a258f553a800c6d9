"""Loopback helpers shared by the broker, demo and command tests: a WebSocket client that owns
its TCP stream, a plain HTTP GET, and a subprocess's clean end."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from strands_trio._util import collapse_single_exception


async def open_client(
    nursery: trio.Nursery,
    port: int,
    resource: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    subprotocols: Sequence[str] = (),
) -> WebSocketConnection:
    """A WebSocket client of 127.0.0.1:*port*, offering *subprotocols*, closed when *nursery*
    ends.

    Raises:
        trio_websocket.ConnectionRejected: the handshake was refused (``.status_code``).
    """
    ws: WebSocketConnection = await nursery.start(
        partial(_client, port, resource, list(headers), list(subprotocols))
    )
    return ws


async def _client(
    port: int,
    resource: str,
    headers: list[tuple[str, str]],
    subprotocols: list[str],
    *,
    task_status: trio.TaskStatus[Any],
) -> None:
    # We own the TCP stream: trio-websocket's open_websocket leaves the socket of a rejected
    # handshake unclosed (a ResourceWarning).
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with collapse_single_exception():
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    "127.0.0.1",
                    resource,
                    extra_headers=headers,
                    subprotocols=subprotocols or None,
                )
                try:
                    task_status.started(ws)
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(0.2):
                        await ws.aclose()


async def http_get(port: int, target: str) -> tuple[int, bytes]:
    """Status and body of a plain HTTP/1.1 GET of *target* on 127.0.0.1:*port*."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything *stream* sends until it ends."""
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def reap(process: trio.Process) -> None:
    """Kill *process* if it still runs, wait for it, and close its pipes (for a finally)."""
    process.kill()
    with trio.CancelScope(shield=True):
        await process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()


def self_signed_certificate(directory: Path, host: str) -> tuple[str, str]:
    """A fresh self-signed certificate for *host* (a name or an IP address; its own CA) and
    its key, written as PEM files in *directory*; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alternative = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


class Changes:
    """For fakes that record what happens to them: ``pulse()`` after each recorded change,
    and a test awaits ``wait_for(predicate)`` instead of sleeping."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def pulse(self) -> None:
        """Something changed: wake whoever waits."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once *predicate* holds (checked after every change)."""
        while not predicate():
            await self._changed.wait()
