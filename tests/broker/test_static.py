"""``GET /strands.js``: the browser client served by ``serve_broker`` from the package."""

from __future__ import annotations

from functools import partial
from importlib import resources
from typing import Any

import trio

import strands_trio
from strands_trio.broker import BrokerConfig, serve_broker

from .test_websocket import get, http

CLIENT = (resources.files("strands_trio") / "static" / "strands.js").read_bytes()


async def start_broker(nursery: trio.Nursery, **settings: Any) -> int:
    """A broker on free ports; its WebSocket (and HTTP) port."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, **settings)
    address = await nursery.start(serve_broker, config)
    return int(address.ws_port)


async def test_strands_js_is_served_with_its_version(nursery: trio.Nursery) -> None:
    """The file is answered as JavaScript with its version, no-cache and a stable ETag,
    whatever the query string."""
    port = await start_broker(nursery)
    with trio.fail_after(10):
        status, headers, body = await http(port, get("/strands.js"))
        again = await http(port, get(f"/strands.js?v={strands_trio.__version__}"))
    assert (status, body) == (200, CLIENT)
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-strands-version"] == strands_trio.__version__
    assert headers["etag"].startswith('"')
    assert headers["etag"].endswith('"')
    assert headers["access-control-allow-origin"] == "*"  # a page elsewhere may import it
    assert again[0] == 200
    assert again[2] == CLIENT
    assert again[1]["etag"] == headers["etag"]
    assert CLIENT.startswith(f"// strands.js {strands_trio.__version__}\n".encode())
    assert f'export const VERSION = "{strands_trio.__version__}";'.encode() in CLIENT


async def test_strands_js_can_be_turned_off(nursery: trio.Nursery) -> None:
    """With serve_strands_js=False the path is a 404 like any unknown path."""
    port = await start_broker(nursery, serve_strands_js=False)
    with trio.fail_after(10):
        status, _, _ = await http(port, get("/strands.js"))
    assert status == 404


async def test_an_extra_route_replaces_strands_js(nursery: trio.Nursery) -> None:
    """An application's own /strands.js route wins over the built-in one."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0)
    routes = {"/strands.js": lambda query: (200, "text/javascript", b"// mine\n")}
    address = await nursery.start(partial(serve_broker, config, extra_routes=routes))
    with trio.fail_after(10):
        status, headers, body = await http(address.ws_port, get("/strands.js"))
    assert (status, body) == (200, b"// mine\n")
    assert "x-strands-version" not in headers
