"""What a backend is told about a WebSocket handshake, shaped as the reference broker shapes it.

Sans-IO: no trio, no sockets. The broker (``_front.py``) and :class:`~strands_trio.testing.
FakeBroker` both call :func:`shape_handshake`, so a backend hears the same ``connection_request``
from either. The reference broker is a Go ``net/http`` server; what it sends is:

- ``headers``: Go's canonical names (``Sec-Websocket-Key``), each value a separate list item in
  arrival order, and no ``Host`` (Go moves it out of the header map); values are the bytes
  received, decoded as UTF-8 with undecodable bytes replaced (Go's JSON encoder does that);
- ``url``: the percent-decoded path, as Go's ``r.URL.Path``; the query string is dropped
  (glued back only with ``BrokerConfig.pass_query_string``, for backends that parse the url);
- ``remote_addr``: ``ip:port`` of the peer, IPv6 in brackets as Go's ``net.JoinHostPort``;

and, an extension of strands-trio's broker, ``query``: the raw query string (without ``?``),
so that a backend reads a browser's token without the url losing its meaning as a room.

Also here, because they read the same headers: the client's address behind trusted proxies
(:func:`client_address`), the ``Origin`` check (:func:`origin_allowed`) and the choice of a
subprotocol (:func:`select_subprotocol`).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Callable, Iterable, Sequence

import attrs

from ..protocol import canonical_header

__all__ = [
    "Handshake",
    "client_address",
    "origin_allowed",
    "peer_ip",
    "select_subprotocol",
    "shape_handshake",
    "split_target",
]


@attrs.frozen(kw_only=True)
class Handshake:
    """A WebSocket handshake as a backend's ``connection_request`` carries it.

    Attributes:
        headers: Canonical header name to its values, in arrival order, without ``Host``.
        url: The percent-decoded path (and ``?query`` only with ``pass_query_string``).
        remote_addr: The client's ``"ip:port"`` (``"ip:0"`` behind a trusted proxy).
        query: The raw query string, without ``?`` (``""`` when there is none).
    """

    headers: dict[str, list[str]]
    url: str
    remote_addr: str
    query: str = ""


def _text(value: str) -> str:
    """A header value as Go's JSON encoder would write it. The HTTP parser decodes header bytes
    as ISO-8859-1 (every byte a code point); the reference writes the raw bytes as UTF-8, with
    invalid sequences replaced by U+FFFD."""
    if value.isascii():
        return value
    return value.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def split_target(target: str) -> tuple[str, str]:
    """A request target's percent-decoded path (undecodable bytes replaced) and raw query
    string (without ``?``). The absolute form (``http://host/ws/x``) gives its path."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
    else:  # absolute form, or ``*``
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path or target, parts.query
    return urllib.parse.unquote(path, errors="replace"), query


def shape_handshake(
    headers: Iterable[tuple[str, str]],
    target: str,
    remote_addr: str,
    *,
    pass_query_string: bool = False,
) -> Handshake:
    """The :class:`Handshake` a backend is told about.

    Args:
        headers: ``(name, value)`` pairs in arrival order, names in any case, values as the
            HTTP parser decoded them (ISO-8859-1).
        target: The request target (``/ws/chat?x=1``).
        remote_addr: The client's ``"ip:port"`` (see :func:`client_address`).
        pass_query_string: Also glue ``?query`` to the url (the reference drops it; the
            query is in :attr:`Handshake.query` either way).
    """
    wire: dict[str, list[str]] = {}
    for name, value in headers:
        key = canonical_header(name)
        if key != "Host":
            wire.setdefault(key, []).append(_text(value))
    path, query = split_target(target)
    url = f"{path}?{query}" if pass_query_string and query else path
    return Handshake(headers=wire, url=url, remote_addr=remote_addr, query=query)


def select_subprotocol(offered: Sequence[str], allowed: tuple[str, ...]) -> str | None:
    """The subprotocol to answer a handshake with: the first one the client *offered* that is
    in *allowed* (``BrokerConfig.subprotocols``), or ``None`` (no ``Sec-WebSocket-Protocol``
    in the answer; never a refusal).

    A browser offering subprotocols fails the connection unless the answer names one of them,
    so a page that carries its token as one (``["strands", "bearer.<token>"]``) must offer a
    name the broker selects too; the token itself is never selected, since only *allowed*
    names are, and it reaches the backend in the request's ``Sec-Websocket-Protocol`` header.
    """
    for name in offered:
        if name in allowed:
            return name
    return None


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> _IP | None:
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


def _join(ip: _IP | str, port: int) -> str:
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def peer_ip(host: str) -> str:
    """The TCP peer's address as the broker counts it (an IPv4 address mapped into IPv6, as a
    dual-stack socket reports it, is given as IPv4)."""
    return str(_ip(host) or host)


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
