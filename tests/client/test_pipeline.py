"""The pipeline: middleware order and short-circuits, guards, exception handlers, the host
context and its typed views, reflector metadata, and typed state carried in metadata."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from strands_trio import (
    CallNext,
    ConnectionRequestContext,
    Context,
    EventType,
    EventTypeError,
    ExecutionContext,
    MetadataKey,
    StrandsApp,
    StrandsClient,
    exception_handler,
    reflector,
    set_metadata,
    use_exception_handlers,
    use_guards,
    use_middleware,
)
from strands_trio.testing import ConnectionRejected, FakeBroker, MiddlewareHarness


def tracer(name: str, log: list[str]) -> Any:
    """A middleware that logs its name on the way in and out."""

    async def middleware(ctx: ExecutionContext, call_next: CallNext) -> None:
        log.append(f"{name}>")
        await call_next(ctx)
        log.append(f"<{name}")

    return middleware


async def test_order_is_the_list_order_first_outermost() -> None:
    """The first middleware listed runs first on the way in and last on the way out, and the
    handler's own middleware runs inside the app's."""
    log: list[str] = []

    @use_middleware(tracer("h1", log), tracer("h2", log))
    @use_middleware(tracer("h0", log))
    async def on_message(message: str, context: Context) -> None:
        log.append("handler")

    harness = MiddlewareHarness(
        [tracer("a", log), tracer("b", log)], handlers={"on_message": on_message}
    )
    await harness.message("hi")
    assert log == ["a>", "b>", "h1>", "h2>", "h0>", "handler", "<h0", "<h2", "<h1", "<b", "<a"]


async def test_short_circuit_stops_the_event() -> None:
    """A middleware that does not call call_next keeps the event from the handler, and a
    connection request it did not answer is rejected."""

    async def stop(ctx: ExecutionContext, call_next: CallNext) -> None:
        return None

    harness = MiddlewareHarness([stop])
    assert not (await harness.message("hi")).reached
    outcome = await harness.connection_request()
    assert not outcome.reached
    assert outcome.accepted is False


async def test_middleware_can_answer_a_request_itself() -> None:
    """accept() and reject() from a middleware answer the request without the handler."""

    async def decide(ctx: ExecutionContext, call_next: CallNext) -> None:
        view = ctx.switch_to_connection_request()
        if view.get_request().header("x-vip"):
            view.accept()
        else:
            view.reject()

    harness = MiddlewareHarness([decide])
    assert (await harness.connection_request(headers={"X-Vip": "1"})).accepted is True
    assert (await harness.connection_request()).accepted is False


async def test_middleware_sees_the_handler_answer() -> None:
    """Code after call_next sees the answer the handler gave, and may overturn it."""
    seen: list[bool] = []

    async def audit(ctx: ExecutionContext, call_next: CallNext) -> None:
        await call_next(ctx)
        request = ctx.switch_to_connection_request().get_request()
        seen.append(request.accepted)
        if request.remote_addr.startswith("10."):
            ctx.switch_to_connection_request().reject()

    async def admit(request: ConnectionRequestContext) -> bool:
        return True

    harness = MiddlewareHarness([audit], handlers={"on_connection_request": admit})
    assert (await harness.connection_request(remote_addr="127.0.0.1:1")).accepted is True
    assert (await harness.connection_request(remote_addr="10.0.0.1:1")).accepted is False
    assert seen == [True, True]


async def test_filtering_by_event_type() -> None:
    """A middleware can act on one kind of event and pass the others through."""
    counted: list[EventType] = []

    async def messages_only(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is EventType.MESSAGE:
            counted.append(ctx.get_type())
        await call_next(ctx)

    harness = MiddlewareHarness([messages_only])
    assert (await harness.connection_request()).reached
    assert (await harness.new_connection()).reached
    assert (await harness.message("x")).reached
    assert (await harness.disconnect()).reached
    assert (await harness.error("boom")).reached
    assert counted == [EventType.MESSAGE]


async def test_host_context_pieces_and_views() -> None:
    """get_type, get_args, get_app, get_client and each switch give the event's parts."""
    harness = MiddlewareHarness()
    ctx = (await harness.message("hello", client_id="ann", room_id="lobby")).ctx
    assert ctx.get_type() is EventType.MESSAGE
    frame, message, context = ctx.get_args()
    assert (frame.message, message, context.client_id) == ("hello", "hello", "ann")
    assert ctx.get_app() is harness
    view = ctx.switch_to_message()
    assert (view.get_message(), view.get_context().room_id) == ("hello", "lobby")
    assert ctx.client_id == "ann"

    request_ctx = (await harness.connection_request("/ws/a", remote_addr="1.2.3.4:5")).ctx
    request = request_ctx.switch_to_connection_request().get_request()
    assert (request.url, request.remote_addr) == ("/ws/a", "1.2.3.4:5")
    assert request_ctx.switch_to_connection_request().get_context() is request.context

    left = (await harness.disconnect("bob")).ctx.switch_to_connection()
    assert left.is_disconnect
    assert left.get_context().client_id == "bob"
    error = (await harness.error("oops")).ctx.switch_to_error()
    assert error.get_error() == "oops"


async def test_switching_to_the_wrong_kind_is_a_clear_error() -> None:
    """A switch to a view of another kind of event raises EventTypeError naming both kinds."""
    ctx = (await MiddlewareHarness().message("hi")).ctx
    with pytest.raises(EventTypeError, match=r"needs a connection_request event.*new_message"):
        ctx.switch_to_connection_request()
    with pytest.raises(TypeError, match="new_connection or disconnected"):
        ctx.switch_to_connection()
    with pytest.raises(EventTypeError):
        ctx.switch_to_error()


async def test_middleware_sends_through_the_client() -> None:
    """get_client() is the connected client: a middleware can answer a client itself."""

    async def pong(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is EventType.MESSAGE and ctx.switch_to_message().get_message() == "ping":
            await ctx.get_client().send_private_message(ctx.client_id, "pong")
            return
        await call_next(ctx)

    harness = MiddlewareHarness([pong])
    assert not (await harness.message("ping", client_id="ann")).reached
    assert (await harness.message("other")).reached
    assert harness.sent == [("ann", "pong")]


# ---------------------------------------------------------------------- guards


async def test_guards_sync_async_and_plain_functions() -> None:
    """Guards may be objects with a sync or async can_activate, or plain functions; all must
    allow an event for it to reach the handler."""

    class NotBob:
        def can_activate(self, ctx: ExecutionContext) -> bool:
            return ctx.client_id != "bob"

    class NotEve:
        async def can_activate(self, ctx: ExecutionContext) -> bool:
            await trio.lowlevel.checkpoint()
            return ctx.client_id != "eve"

    def not_mallory(ctx: ExecutionContext) -> bool:
        return ctx.client_id != "mallory"

    harness = MiddlewareHarness(guards=[NotBob(), NotEve(), not_mallory])
    assert (await harness.message("x", client_id="ann")).reached
    for name in ("bob", "eve", "mallory"):
        assert not (await harness.message("x", client_id=name)).reached
    assert harness.counters.events_refused == 3


async def test_refused_message_gets_a_forbidden_error_frame(caplog: Any) -> None:
    """By default a refused message is logged and its client gets a forbidden error frame."""
    caplog.set_level(logging.INFO, "strands_trio.pipeline")
    harness = MiddlewareHarness(guards=[lambda ctx: False])
    await harness.message("x", client_id="ann")
    ((to, text),) = harness.sent
    assert to == "ann"
    assert json.loads(text) == {
        "type": "error",
        "code": "forbidden",
        "reason": "you are not allowed to do that",
    }
    assert "refused a message from client ann" in caplog.text


async def test_refused_connection_request_is_rejected() -> None:
    """A guard refusing a connection request rejects it without calling the handler."""
    harness = MiddlewareHarness(guards=[lambda ctx: ctx.get_type() != "connection_request"])
    outcome = await harness.connection_request()
    assert (outcome.reached, outcome.accepted) == (False, False)
    assert harness.sent == []


async def test_on_forbidden_hook_replaces_the_default() -> None:
    """An app's on_forbidden is called with the context and the guard that refused."""
    calls: list[tuple[str, Any]] = []

    def deny(ctx: ExecutionContext) -> bool:
        return False

    async def on_forbidden(ctx: ExecutionContext, guard: Any) -> None:
        calls.append((ctx.client_id, guard))

    harness = MiddlewareHarness(guards=[deny], on_forbidden=on_forbidden)
    await harness.message("x", client_id="ann")
    assert calls == [("ann", deny)]
    assert harness.sent == []


def roles(*names: str) -> Any:
    return set_metadata("roles", names)


class RolesGuard:
    """Reads @roles from the handler and the user's role from metadata."""

    def can_activate(self, ctx: ExecutionContext) -> bool:
        needed = reflector.get_all_and_override("roles", ctx.get_handler(), ctx.get_class())
        return not needed or ctx.context.metadata.get("role") in needed


async def test_reflector_metadata_drives_a_guard() -> None:
    """A decorator's metadata is read back from ctx.get_handler() by a global guard."""

    @roles("admin")
    async def on_message(message: str, context: Context) -> None: ...

    harness = MiddlewareHarness(guards=[RolesGuard()], handlers={"on_message": on_message})
    assert not (await harness.message("x", metadata={"role": "user"})).reached
    assert (await harness.message("x", metadata={"role": "admin"})).reached
    assert (await harness.new_connection(metadata={"role": "user"})).reached  # no @roles there


def test_reflector_lookups() -> None:
    """get, get_all, override (handler first) and merge over a handler and its class."""

    @set_metadata("tags", ["b"])
    @set_metadata("limits", {"burst": 1})
    class Controller:
        @set_metadata("tags", ["a"])
        @set_metadata("limits", {"rate": 2})
        def handler(self) -> None: ...

    method = Controller().handler
    assert reflector.get("tags", method) == ["a"]
    assert reflector.get("missing", method, "default") == "default"
    assert reflector.get_all("tags", method, Controller) == [["a"], ["b"]]
    assert reflector.get_all_and_override("tags", method, Controller) == ["a"]
    assert reflector.get_all_and_override("nothing", method, Controller) is None
    assert reflector.get_all_and_merge("tags", method, Controller) == ["a", "b"]
    assert reflector.get_all_and_merge("limits", method, Controller) == {"rate": 2, "burst": 1}

    class Sub(Controller): ...

    assert reflector.get("tags", Sub) is None  # class metadata is not inherited


async def test_per_handler_guards_run_after_the_apps() -> None:
    """@use_guards adds guards for one handler, checked after the app's."""
    order: list[str] = []

    def app_guard(ctx: ExecutionContext) -> bool:
        order.append("app")
        return True

    def own_guard(ctx: ExecutionContext) -> bool:
        order.append("own")
        return False

    @use_guards(own_guard)
    async def on_message(message: str, context: Context) -> None: ...

    harness = MiddlewareHarness(guards=[app_guard], handlers={"on_message": on_message})
    assert not (await harness.message("x")).reached
    assert (await harness.new_connection()).reached
    assert order == ["app", "own", "app"]


# ---------------------------------------------------------------------- exceptions


async def test_exception_handlers_per_handler_first_then_global() -> None:
    """An exception goes to the handler's own exception handler if it matches, else to the
    app's; one nobody handles propagates."""
    caught: list[str] = []

    @exception_handler(KeyError)
    async def own(ctx: ExecutionContext, exc: BaseException) -> None:
        caught.append(f"own {exc!r}")

    @exception_handler(LookupError, ValueError)
    def app_wide(ctx: ExecutionContext, exc: BaseException) -> None:  # sync works too
        caught.append(f"app {type(exc).__name__}")

    @use_exception_handlers(own)
    async def on_message(message: str, context: Context) -> None:
        raise {"key": KeyError("k"), "index": IndexError(), "value": ValueError()}.get(
            message, RuntimeError("unhandled")
        )

    harness = MiddlewareHarness(exception_handlers=[app_wide], handlers={"on_message": on_message})
    for message in ("key", "index", "value"):
        await harness.message(message)
    assert caught == ["own KeyError('k')", "app IndexError", "app ValueError"]
    with pytest.raises(RuntimeError, match="unhandled"):
        await harness.message("other")


async def test_exception_in_middleware_is_caught_too() -> None:
    """Exception handlers wrap the whole chain, middleware included."""

    async def broken(ctx: ExecutionContext, call_next: CallNext) -> None:
        raise PermissionError("nope")

    @exception_handler(PermissionError)
    async def denied(ctx: ExecutionContext, exc: BaseException) -> None:
        await ctx.send_error("forbidden", str(exc))

    harness = MiddlewareHarness([broken], exception_handlers=[denied])
    assert not (await harness.message("x", client_id="ann")).reached
    assert json.loads(harness.sent[0][1])["reason"] == "nope"
    outcome = await harness.connection_request()
    assert outcome.accepted is False  # caught, but nobody answered: rejected


def test_bad_parts_are_refused_at_construction() -> None:
    """A sync middleware, a guard without can_activate and a malformed exception handler are
    TypeErrors when the app is made, not when the first event comes."""

    def sync_middleware(ctx: Any, call_next: Any) -> None: ...

    with pytest.raises(TypeError, match="middleware must be async"):
        StrandsApp(middleware=[sync_middleware])
    with pytest.raises(TypeError, match="can_activate"):
        StrandsApp(guards=[object()])
    with pytest.raises(TypeError, match="exception_types"):
        StrandsApp(exception_handlers=[object()])
    with pytest.raises(TypeError, match="exception classes"):
        exception_handler("ValueError")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- end to end


@attrs.frozen
class User:
    name: str
    admin: bool = False


USER = MetadataKey("user", User)


async def test_state_survives_from_request_to_later_events(broker: FakeBroker) -> None:
    """State a middleware sets at the connection request rides in metadata, survives a
    handler that replaces the metadata dict, and reads back typed in later events."""
    seen: list[Any] = []

    async def login(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is EventType.CONNECTION_REQUEST:
            name = ctx.switch_to_connection_request().get_request().header("x-user")
            ctx.set_state(USER, User(name=name or "anon", admin=name == "root"))
        else:
            seen.append((ctx.get_type(), ctx.get_state(USER)))
        await call_next(ctx)

    app = StrandsApp(middleware=[login])

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        seen.append(("handler", USER.get(request)))
        request.context.metadata = {"theme": "dark"}  # replaces the dict
        return True

    @app.on_message
    async def echo(message: str, context: Context) -> None:
        user = USER.get(context)
        assert user is not None
        await app.send_private_message(context.client_id, f"{user.name}: {message}")

    async with app.connected(connect=broker.open_backend_stream):
        ws = await broker.connect(headers={"X-User": "root"})
        assert ws.metadata == {"theme": "dark", "user": {"name": "root", "admin": True}}
        await ws.send("hi")
        assert await ws.receive() == "root: hi"
    assert seen[0] == ("handler", User(name="root", admin=True))
    assert (EventType.MESSAGE, User(name="root", admin=True)) in seen


async def test_client_subclass_with_middleware(broker: FakeBroker) -> None:
    """A StrandsClient subclass takes middleware too; get_class() is the subclass and a
    handler error in the pipeline is counted while the client goes on."""
    classes: list[Any] = []

    async def spy(ctx: ExecutionContext, call_next: CallNext) -> None:
        classes.append((ctx.get_class(), ctx.get_handler().__name__))
        await call_next(ctx)

    class Backend(StrandsClient):
        async def on_message(self, message: str, context: Context) -> None:
            if message == "boom":
                raise RuntimeError("boom")
            await self.send_private_message(context.client_id, message)

    client = Backend(connect=broker.open_backend_stream, middleware=[spy])
    async with client.connected():
        ws = await broker.connect()
        await ws.send("boom")
        await ws.send("after")
        assert await ws.receive() == "after"
        assert client.statistics().handler_errors == 1
    assert (Backend, "on_message") in classes
    assert (Backend, "on_connection_request") in classes


async def test_rejecting_middleware_end_to_end(broker: FakeBroker) -> None:
    """A short-circuiting middleware rejects real connection requests."""

    async def closed(ctx: ExecutionContext, call_next: CallNext) -> None:
        if ctx.get_type() is not EventType.CONNECTION_REQUEST:
            await call_next(ctx)

    app = StrandsApp(middleware=[closed])
    async with app.connected(connect=broker.open_backend_stream):
        with pytest.raises(ConnectionRejected):
            await broker.connect()
        await trio.testing.wait_all_tasks_blocked()
        assert app.statistics().requests_rejected == 1


async def test_a_middleware_with_wrap_next_builds_its_own_step() -> None:
    """wrap_next(call_next) is called once, when the chain is built, and its step runs for
    every event instead of __call__; returning call_next(ctx) passes the event on."""
    calls: list[str] = []

    class Fast:
        async def __call__(self, ctx: Any, call_next: Any) -> None:
            calls.append("call")
            await call_next(ctx)

        def wrap_next(self, call_next: Any, kind: EventType) -> Any:
            calls.append("wrap")
            if kind is not EventType.MESSAGE:
                return call_next  # nothing to do: the layer is not in that chain

            async def drop(ctx: Any) -> None:
                pass

            def step(ctx: Any) -> Any:
                calls.append("step")
                if ctx.switch_to_message().get_message() == "stop":
                    return drop(ctx)  # the chain stops here
                return call_next(ctx)

            return step

    harness = MiddlewareHarness([Fast()])
    wraps = calls.count("wrap")
    assert wraps == 5  # once per handler's chain, when built
    assert (await harness.message("go")).reached
    assert not (await harness.message("stop")).reached
    assert calls.count("wrap") == wraps
    assert calls.count("step") == 2
    assert (await harness.new_connection()).reached
    assert calls.count("step") == 2  # not in the new_connection chain at all
    assert "call" not in calls
