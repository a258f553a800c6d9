"""Embedding a backend in a Trio program: its tasks live in your nursery."""

import trio

from strands_trio import ClientConfig, StrandsApp

app = StrandsApp(config=ClientConfig(shutdown_timeout=2))


async def announce_every_minute() -> None:
    while True:
        await trio.sleep(60)
        await app.broadcast_message("a minute has passed", wait=True)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve, "localhost", 8081)  # returns once connected
        nursery.start_soon(announce_every_minute)
        # ... the rest of your program; cancelling the nursery stops everything cleanly


if __name__ == "__main__":
    trio.run(main)
