"""A broker and a backend in one Trio program: the broker is a task like any other."""

import trio

from strands_trio import Context, StrandsApp
from strands_trio.broker import BrokerConfig, serve_broker

app = StrandsApp()


@app.on_message
async def echo(message: str, context: Context) -> None:
    await app.send_private_message(context.client_id, f"echo: {message}")


async def main(
    ws_port: int = 8080, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=ws_port, tcp_port=0)
    async with trio.open_nursery() as nursery:
        broker = await nursery.start(serve_broker, config)  # returns once both ports listen
        await nursery.start(app.serve, "127.0.0.1", broker.tcp_port)
        task_status.started(broker.ws_port)  # clients connect to ws://127.0.0.1:<port>/ws/...


if __name__ == "__main__":
    trio.run(main)  # Ctrl-C stops both, gracefully
