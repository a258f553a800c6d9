"""``GET /strands.js``: the browser client shipped in the package, served by the broker.

The file (``strands_trio/static/strands.js``) is read once, when the broker starts; its first
line names its version (``// strands.js 0.1.0``), which each answer repeats in an
``X-Strands-Version`` header. Answers carry ``Cache-Control: no-cache`` and an ``ETag`` (a
digest of the bytes), so that a browser revalidates and never runs a stale client after an
upgrade; the query string is ignored (``/strands.js?v=0.1.0`` is the same file, a way for pages
to bust other caches).

A module script from another origin is fetched in CORS mode: without
``Access-Control-Allow-Origin`` a page served elsewhere (a web app on its own port, the usual
case) cannot import it. The file is public and sent without credentials, so any origin may
read it (``*``); whether that page may then *connect* is the WebSocket port's own origin
check (``BrokerConfig.allowed_origins``), which this does not loosen.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from ._front import Route, RouteAnswer

__all__ = ["STRANDS_JS_PATH", "read_strands_js", "strands_js_route"]

#: Where the broker serves the client.
STRANDS_JS_PATH = "/strands.js"

_FIRST_LINE = re.compile(rb"// strands\.js (\S+)\r?\n")


def read_strands_js() -> tuple[bytes, str]:
    """The client's bytes, from the installed package, and its version (from its first line).

    Raises:
        RuntimeError: the file does not start with ``// strands.js <version>`` (a broken
            install or a bad edit).
    """
    body = (resources.files("strands_trio") / "static" / "strands.js").read_bytes()
    match = _FIRST_LINE.match(body)
    if match is None:
        raise RuntimeError(
            "strands_trio/static/strands.js must start with '// strands.js <version>'"
        )
    return body, match.group(1).decode("ascii")


def strands_js_route() -> Route:
    """A :data:`~._front.Route` answering with the client: read now, served from memory.

    Raises:
        RuntimeError: as :func:`read_strands_js`.
    """
    body, version = read_strands_js()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = [
        ("Cache-Control", "no-cache"),
        ("ETag", etag),
        ("X-Strands-Version", version),
        ("X-Content-Type-Options", "nosniff"),
        ("Access-Control-Allow-Origin", "*"),
        ("Cross-Origin-Resource-Policy", "cross-origin"),
    ]
    answer: RouteAnswer = (200, "text/javascript; charset=utf-8", body, headers)

    def serve(query: str) -> RouteAnswer:
        return answer

    return serve
