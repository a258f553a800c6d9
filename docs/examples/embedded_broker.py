"""A broker and a backend in one Trio program: the broker is a task like any other, and
serves the page too, so the page is of the broker's origin and needs no ``allowed_origins``."""

from functools import partial

import trio

from strands_trio import Context, StrandsApp
from strands_trio.broker import BrokerConfig, serve_broker

app = StrandsApp()

PAGE = b"""<!doctype html><meta charset="utf-8"><title>Echo</title>
<script type="module">
  import { StrandsClient } from "/strands.js";  // served by the broker, same origin
  const client = new StrandsClient("/ws/lobby");
  client.on("message", (data) => document.body.append(String(data), document.createElement("br")));
  client.sendRaw("hello");
</script>"""


def page(query: str) -> tuple[int, str, bytes]:
    """``GET /``: the page, whatever the query string."""
    return 200, "text/html; charset=utf-8", PAGE


@app.on_message
async def echo(message: str, context: Context) -> None:
    await app.send_private_message(context.client_id, f"echo: {message}")


async def main(
    ws_port: int = 8080, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=ws_port, tcp_port=0)
    async with trio.open_nursery() as nursery:
        serve = partial(serve_broker, config, extra_routes={"/": page})  # http://127.0.0.1:8080/
        broker = await nursery.start(serve)  # returns once both ports listen
        await nursery.start(app.serve, "127.0.0.1", broker.tcp_port)
        task_status.started(broker.ws_port)  # clients connect to ws://127.0.0.1:<port>/ws/...


if __name__ == "__main__":
    trio.run(main)  # Ctrl-C stops both, gracefully
