"""Writing middleware, typed state, a guard driven by handler metadata, and an exception
handler, on one app."""

import logging
from typing import Any

import trio

from strands_trio import (
    CallNext,
    Context,
    EventType,
    ExecutionContext,
    MetadataKey,
    StrandsApp,
    exception_handler,
    reflector,
    set_metadata,
)

log = logging.getLogger("chat")


# A middleware is an async function (ctx, call_next): code before call_next runs on the way
# in, code after it on the way out.
async def timing(ctx: ExecutionContext, call_next: CallNext) -> None:
    start = trio.current_time()
    try:
        await call_next(ctx)
    finally:
        log.debug("%s took %.3f ms", ctx.get_type(), (trio.current_time() - start) * 1e3)


# Or an object with an async __call__, when it has settings or state. Not calling call_next
# stops the event; a connection request stopped without an answer is rejected.
class Maintenance:
    def __init__(self) -> None:
        self.on = False
        self.refused = 0

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        if self.on and ctx.get_type() is EventType.CONNECTION_REQUEST:
            self.refused += 1
            ctx.switch_to_connection_request().reject()
            return
        await call_next(ctx)


# State that lasts as long as the connection rides in its metadata under a typed key.
LANGUAGE = MetadataKey("language", str)


async def language(ctx: ExecutionContext, call_next: CallNext) -> None:
    if ctx.get_type() is EventType.CONNECTION_REQUEST:
        request = ctx.switch_to_connection_request().get_request()
        ctx.set_state(LANGUAGE, (request.header("Accept-Language") or "en")[:2])
    await call_next(ctx)


# A decorator that sets metadata on handlers, and a guard that reads it back.
def feature(name: str) -> Any:
    return set_metadata("feature", name)


class FeatureFlags:
    def __init__(self, *enabled: str) -> None:
        self.enabled = set(enabled)

    def can_activate(self, ctx: ExecutionContext) -> bool:
        needed = reflector.get("feature", ctx.get_handler())
        return needed is None or needed in self.enabled


# An exception handler turns an error into an answer to the client.
@exception_handler(KeyError)
async def unknown(ctx: ExecutionContext, exc: BaseException) -> None:
    await ctx.send_error("unsupported", f"no greeting in {exc}")


maintenance = Maintenance()
app = StrandsApp(
    middleware=[timing, maintenance, language],
    guards=[FeatureFlags("greetings")],
    exception_handlers=[unknown],
)

GREETINGS = {"en": "hello", "fr": "bonjour"}


@feature("greetings")
@app.on_message("greet")
async def greet(payload: dict[str, Any], context: Context) -> None:
    greeting = GREETINGS[LANGUAGE.get(context) or "en"]  # KeyError: see unknown()
    await app.send_private_message(context.client_id, greeting)


@feature("polls")  # not enabled: FeatureFlags refuses it
@app.on_message("poll")
async def poll(payload: dict[str, Any], context: Context) -> None: ...
