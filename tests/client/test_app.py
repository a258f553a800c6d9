"""StrandsApp: decorated functions, sync ones in threads, sends through the app."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from strands_trio import ConnectionRequestContext, Context, NotConnectedError, StrandsApp
from strands_trio.testing import ConnectionRejected, FakeBroker


def make_app() -> tuple[StrandsApp, list[tuple[str, object]]]:
    app = StrandsApp()
    seen: list[tuple[str, object]] = []

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.room_id = request.url.removeprefix("/ws/")
        request.context.metadata = {"name": request.header("x-name")}
        return request.header("authorization") == "Bearer letmein"

    @app.on_new_connection
    async def joined(context: Context) -> None:
        seen.append(("joined", context.metadata["name"]))
        await app.send_room_message(context.room_id, f"{context.metadata['name']} joined")

    @app.on_message
    def shout(message: str, context: Context) -> None:  # sync: runs in a thread
        seen.append(("thread", threading.get_ident()))
        trio.from_thread.run(app.broadcast_message, message.upper())

    @app.on_disconnect
    async def left(context: Context) -> None:
        seen.append(("left", context.client_id))

    return app, seen


async def test_decorated_handlers(broker: FakeBroker) -> None:
    """Each decorator registers its callback; async ones run on the loop, the sync one in a
    worker thread, and sends go through the app."""
    app, seen = make_app()
    async with app.connected(connect=broker.open_backend_stream):
        with pytest.raises(ConnectionRejected):
            await broker.connect("/ws/lobby", headers={"Authorization": "Bearer wrong"})
        ws = await broker.connect(
            "/ws/lobby", headers={"Authorization": "Bearer letmein", "X-Name": "ann"}
        )
        assert ws.room_id == "lobby"
        assert await ws.receive() == "ann joined"
        await ws.send("hello")
        assert await ws.receive() == "HELLO"
        await ws.close()
        await trio.testing.wait_all_tasks_blocked()
        assert app.statistics().requests_rejected == 1
    assert seen[0] == ("joined", "ann")
    assert seen[1][0] == "thread"
    assert seen[1][1] != threading.get_ident()
    assert seen[2] == ("left", ws.client_id)


async def test_unregistered_callbacks_use_the_defaults(broker: FakeBroker) -> None:
    """An app with no handlers accepts everyone (the peer's default) and ignores messages."""
    app = StrandsApp()
    async with app.connected(connect=broker.open_backend_stream) as same:
        assert same is app
        ws = await broker.connect("/ws/x")
        await ws.send("ignored")
        assert ws.room_id == "/ws/x"


def test_one_handler_per_callback() -> None:
    """Registering a second function for the same callback is an error naming the first."""
    app = StrandsApp()

    @app.on_message
    async def first(message: str, context: Context) -> None: ...

    with pytest.raises(ValueError, match="on_message already has a handler"):

        @app.on_message
        async def second(message: str, context: Context) -> None: ...

    with pytest.raises(TypeError, match="needs a function"):
        app.on_error("not callable")  # type: ignore[arg-type]


async def test_sending_while_not_serving() -> None:
    """Sending through an app that is not serving says how to start it."""
    app = StrandsApp()
    with pytest.raises(NotConnectedError, match=r"app\.serve"):
        await app.broadcast_message("nobody")
    with pytest.raises(NotConnectedError):
        app.statistics()


async def test_serve_with_nursery_start(broker: FakeBroker, nursery: trio.Nursery) -> None:
    """serve() hands over once connected, and refuses to serve twice at once."""
    app = StrandsApp()
    await nursery.start(
        lambda task_status: app.serve(connect=broker.open_backend_stream, task_status=task_status)
    )
    assert app.is_connected
    with pytest.raises(RuntimeError, match="already serving"):
        await app.serve(connect=broker.open_backend_stream)


def test_a_handler_with_the_wrong_arity_is_refused_when_registered() -> None:
    """A handler that cannot take the arguments it will get is a TypeError at registration,
    naming it, not a logged TypeError at its first event."""
    app = StrandsApp()

    async def two(context: Context, extra: int) -> None: ...

    async def one(message: str) -> None: ...

    async def flexible(*args: object) -> None: ...

    with pytest.raises(TypeError, match=r"@app.on_new_connection is called with 1 argument"):
        app.on_new_connection(two)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"@app.on_message is called with 2 argument"):
        app.on_message(one)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"@app.on_message\('t'\) is called with 2"):
        app.on_message("t")(one)  # type: ignore[arg-type]
    app.on_disconnect(flexible)
    app.on_error(flexible)


def test_a_client_subclass_with_the_wrong_arity_is_refused_when_made() -> None:
    """The same check for StrandsClient subclasses, when the client is made."""
    from strands_trio import StrandsClient

    class Wrong(StrandsClient):
        async def on_message(self, message: str) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match=r"Wrong.on_message is called with 2 argument"):
        Wrong()
