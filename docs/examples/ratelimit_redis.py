"""Rate limits that hold across every replica of a backend: the buckets live in Redis."""

import trio

from strands_trio import Context, StrandsApp
from strands_trio.middleware import Rate, RateLimit, RedisStore
from strands_trio.redis import LiveRedis, serve_live_redis


def make_app(redis: LiveRedis) -> StrandsApp:
    app = StrandsApp(
        middleware=[
            RateLimit(
                messages=Rate(burst=5, per_second=1),  # per client, whichever replica
                connections=Rate(burst=10, per_second=1),  # per remote IP, all replicas
                store=RedisStore(redis, on_unavailable="allow_local"),
            )
        ]
    )

    @app.on_message
    async def echo(message: str, context: Context) -> None:
        await app.send_private_message(context.client_id, f"echo: {message}")

    return app


async def main(redis_url: str = "redis://localhost:6379") -> None:
    async with trio.open_nursery() as nursery:
        # Returns at once, even while Redis is down; reconnects with backoff until cancelled.
        redis = await nursery.start(serve_live_redis, redis_url)
        await make_app(redis).serve("localhost", 8081)


if __name__ == "__main__":
    trio.run(main)
