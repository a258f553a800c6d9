"""HTTP/1.1 on the WebSocket port: the request head, plain answers, and what a WebSocket
handshake says about its client.

Theory of operation. The WebSocket front reads each connection's request head itself, with h11
(:class:`RequestReader`), before trio-websocket sees a byte. That lets it answer plain HTTP
requests (``/healthz``, ``/metrics``) and refuse a handshake with an HTTP status (origin,
limits, the backend's answer) before any upgrade. When a handshake is accepted, the bytes
already read are handed back to trio-websocket through a :class:`ReplayStream`, so wsproto
parses the same request again and answers it with ``101``.

Everything a backend is told about a handshake is shaped as the reference broker (a Go
``net/http`` server) shapes it:

- headers: Go's canonical names (``Sec-Websocket-Key``), each value a separate list item in
  arrival order, and no ``Host`` (Go moves it out of the header map);
- url: the percent-decoded path, as Go's ``r.URL.Path``; the query string only on request;
- remote_addr: ``ip:port`` of the peer, IPv6 in brackets as Go's ``net.JoinHostPort``.

Reading is bounded: at most :data:`MAX_HEAD_SIZE` bytes of head (more is answered with 431);
time is the caller's (the front reads under ``handshake_timeout``).
"""

from __future__ import annotations

import contextlib
import http
import ipaddress
import urllib.parse
from collections.abc import Callable, Iterable

import attrs
import h11
import trio

__all__ = [
    "MAX_HEAD_SIZE",
    "BadRequest",
    "HttpRequest",
    "ReplayStream",
    "RequestReader",
    "canonical_header",
    "client_address",
    "origin_allowed",
    "status_phrase",
]

#: The longest request head read (request line and headers), in bytes.
MAX_HEAD_SIZE = 16 * 1024

_RECEIVE_SIZE = 4096


class BadRequest(Exception):
    """The peer sent something that is not a readable HTTP request head.

    Attributes:
        status: The HTTP status to answer with (400, or 431 for an over-long head).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_phrase(status: int) -> str:
    """The reason phrase of HTTP *status* (``"Not Found"``), empty if it has none."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def canonical_header(name: str) -> str:
    """Go's canonical form of a header name (``sec-websocket-key`` -> ``Sec-Websocket-Key``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@attrs.frozen(kw_only=True)
class HttpRequest:
    """The head of one HTTP request.

    Attributes:
        method: ``GET``, ``POST``...
        path: The percent-decoded path (undecodable bytes replaced), as Go's ``r.URL.Path``.
        query: The raw query string, without the ``?`` (empty if none).
        headers: ``(lower-case name, value)`` pairs in arrival order; values decoded as UTF-8
            with undecodable bytes replaced, as Go's JSON encoder does.
        received: Every byte read from the connection so far (the head and whatever followed
            it), to replay to trio-websocket.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    received: bytes

    def values(self, name: str) -> list[str]:
        """Every value of header *name* (lower case), in order."""
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str | None:
        """The first value of header *name* (lower case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_websocket(self) -> bool:
        """Whether the request asks for a WebSocket upgrade (``Upgrade: websocket``)."""
        return any(
            token.strip().lower() == "websocket"
            for value in self.values("upgrade")
            for token in value.split(",")
        )

    def websocket_problem(self) -> tuple[int, str] | None:
        """Why wsproto would refuse this handshake, as ``(status, text)``, or ``None``.

        Checked before a backend is asked, so that it only ever hears of handshakes that
        can complete.
        """
        if self.method != "GET":
            return 405, "a WebSocket handshake is a GET request"
        connection = {t.strip().lower() for v in self.values("connection") for t in v.split(",")}
        if "upgrade" not in connection:
            return 400, "missing 'Connection: Upgrade'"
        if self.header("sec-websocket-version") != "13":
            return 426, "unsupported WebSocket version (13 expected)"
        if not self.header("sec-websocket-key"):
            return 400, "missing Sec-WebSocket-Key"
        if self.header("host") is None:
            return 400, "missing Host"
        return None

    def wire_headers(self) -> dict[str, list[str]]:
        """The headers as a backend's ``connection_request`` carries them."""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers:
            if name != "host":
                headers.setdefault(canonical_header(name), []).append(value)
        return headers

    def url(self, *, query_string: bool) -> str:
        """The ``url`` of a ``connection_request``: the path, and the query string when asked
        for (the reference broker drops it)."""
        if query_string and self.query:
            return f"{self.path}?{self.query}"
        return self.path


def _split_target(target: str) -> tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
    else:  # absolute form (``GET http://host/ws/x``) or ``*``
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path or target, parts.query
    return urllib.parse.unquote(path, errors="replace"), query


class RequestReader:
    """Reads one request head from a stream, and answers it (one request per connection:
    every answer closes the connection)."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        self._received = bytearray()

    async def read(self, stream: trio.abc.ReceiveStream) -> HttpRequest | None:
        """The request head, or ``None`` if the peer closed before sending anything.

        Raises:
            BadRequest: the bytes are not an HTTP request, the head is too long, or the peer
                closed or broke the connection in the middle of it (TLS errors included).
        """
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(exc.error_status_hint, str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise BadRequest(400, f"connection broken: {exc!r}") from exc
                self._received += data
                self._h11.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                # h11 bounds an incomplete head only: one that completes in the read that
                # crosses the bound would get through.
                if len(self._received) - len(self._h11.trailing_data[0]) > MAX_HEAD_SIZE:
                    raise BadRequest(431, "request head too long")
                path, query = _split_target(event.target.decode("ascii", errors="replace"))
                return HttpRequest(
                    method=event.method.decode("ascii", errors="replace"),
                    path=path,
                    query=query,
                    headers=tuple(
                        (name.decode("ascii"), value.decode("utf-8", errors="replace"))
                        for name, value in event.headers
                    ),
                    received=bytes(self._received),
                )
            elif isinstance(event, h11.ConnectionClosed) and not self._received:
                return None
            else:
                raise BadRequest(400, "the connection closed in the middle of a request")

    async def respond(
        self,
        stream: trio.abc.SendStream,
        status: int,
        content_type: str,
        body: bytes,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer with *status* and *body*, and ``Connection: close``.

        Broken connections are ignored: the caller closes the stream next anyway.
        """
        response = h11.Response(
            status_code=status,
            reason=status_phrase(status).encode("ascii"),
            headers=[
                ("content-type", content_type),
                ("content-length", str(len(body))),
                ("connection", "close"),
                *headers,
            ],
        )
        data = self._h11.send(response) or b""
        data += self._h11.send(h11.Data(data=body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)

    async def refuse(
        self,
        stream: trio.abc.SendStream,
        status: int,
        text: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer with *status* and a one-line plain text body saying why (with ``Allow: GET``
        to a 405, ``Sec-WebSocket-Version: 13`` to a 426)."""
        headers = list(headers)
        if status == 405:
            headers.append(("allow", "GET"))
        elif status == 426:
            headers.append(("sec-websocket-version", "13"))
        body = f"{text}\n".encode()
        await self.respond(stream, status, "text/plain; charset=utf-8", body, headers=headers)


class ReplayStream(trio.abc.Stream):
    """*stream*, whose first bytes received are *prefix*: what was read from it before.

    Args:
        stream: The connection.
        prefix: Bytes to return before reading from *stream* again.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The prefix first (in pieces of at most *max_bytes*), then the stream's bytes."""
        if not self._prefix:
            return await self.stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send to the stream."""
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait on the stream."""
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the stream."""
        await self.stream.aclose()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _join(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str, port: int) -> str:
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def client_address(
    peer: tuple[str, int], forwarded_for: list[str], trusts: Callable[[str], bool]
) -> tuple[str, str]:
    """The client's IP and the ``remote_addr`` a backend is told, as ``(ip, "ip:port")``.

    The client is the TCP peer, unless the peer is a trusted proxy and sent
    ``X-Forwarded-For``: then it is the right-most address in that header that is not itself a
    trusted proxy (the left-most if they all are), and its port, which proxies do not pass on,
    is given as ``0``. A right-most untrusted entry that is not an IP address is the proxy's
    fault, not the client's: the peer's own address is kept then. An IPv4 address mapped into
    IPv6 (a dual-stack socket) is given as IPv4.

    Args:
        peer: The TCP peer's ``(ip, port)``.
        forwarded_for: Every ``X-Forwarded-For`` header value, in order.
        trusts: Whether an IP is a trusted proxy (``BrokerConfig.trusts``).
    """
    peer_ip = _ip(peer[0]) or peer[0]
    if not forwarded_for or not trusts(str(peer_ip)):
        return str(peer_ip), _join(peer_ip, peer[1])
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        return str(peer_ip), _join(peer_ip, peer[1])
    chosen = hops[0]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None or not trusts(str(ip)):
            chosen = hop
            break
    client = _ip(chosen)
    if client is None:
        return str(peer_ip), _join(peer_ip, peer[1])
    return str(client), _join(client, 0)


def origin_allowed(origins: list[str], host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a handshake's ``Origin`` may open a socket.

    Allowed: no ``Origin`` (not a browser), ``"*"`` in *allowed*, an origin listed in
    *allowed*, or a same-origin page: the origin's ``host[:port]`` is the ``Host`` header
    (compared as written, without adding default ports). Every ``Origin`` header must pass.

    Args:
        origins: The ``Origin`` header values.
        host: The ``Host`` header.
        allowed: ``BrokerConfig.allowed_origins`` (lower case, no trailing slash).
    """
    if "*" in allowed:
        return True
    for origin in origins:
        origin = origin.strip().rstrip("/").lower()
        if origin in allowed:
            continue
        netloc = urllib.parse.urlsplit(origin).netloc if "://" in origin else ""
        if not netloc or host is None or netloc != host.strip().lower():
            return False
    return True
