"""The demo: the Trio broker, a chat backend with the built-in middleware, and a page.

``strands-trio demo`` runs all three in one process and one nursery. The page (served by the
broker at ``/``, from files shipped in the package: no build step, no CDN) is written on
``strands.js``, which the broker serves at ``/strands.js``. It signs in with a name:
``GET /token?name=...`` issues a JWT valid for ten minutes, signed with a secret made at start
(or read from ``$STRANDS_DEMO_SECRET``). The page then opens ``/ws/<room>?token=...``, where:

- ``Auth`` verifies the token (a bad one is refused before the upgrade, and the page says so);
- ``RateLimit`` allows 5 messages at once, then 1 per second (the page's "flood" button shows
  the error frame), and as many calls, apart;
- ``Logging`` logs every event, tokens redacted;
- ``chat.say`` messages are typed (an attrs class, validated), and ``chat.announce`` is for
  the ``admin`` role only (sign in as "admin" to have it);
- ``Presence`` keeps who is in each room, and the room gets the list of names (a
  ``members`` message) at every join and leave;
- ``said`` lines go through ``History`` (a ``MemoryHistory``): each carries its room, an
  offset and an epoch, and a page back after a broker restart or a network blip gets what it
  missed from ``strands.js``'s recovery, once and in order;
- the page calls (``client.call``) ``chat.older`` for a room's lines before an offset (the
  "Load older" button, and once at sign-in for the recent lines), and ``chat.join`` /
  ``chat.leave`` for a second room (``app.join_room``); their wire format is in
  :mod:`strands_trio._demo_chat_models`.

``demo --broker-only`` and ``demo --backend-only`` run the two halves as separate processes
sharing ``$STRANDS_DEMO_SECRET``, so that the broker can be killed and restarted under a
running backend and open pages (the restart test in ``tests/e2e/test_browser.py`` does).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import trio

from ._app import StrandsApp
from ._config import ClientConfig
from ._demo_chat_models import (
    MAX_JOINED,
    Announce,
    Announcement,
    BadRoom,
    Joined,
    Left,
    Line,
    Lines,
    Members,
    Older,
    RoomIndex,
    RoomRequest,
    Said,
    Say,
    check_room,
)
from ._host import ExecutionContext
from ._util import serve_until_signal
from .broker import BrokerAddress, BrokerConfig, serve_broker
from .context import ConnectionRequestContext, Context
from .middleware import (
    IDENTITY,
    Auth,
    History,
    JWTVerifier,
    Logging,
    MemoryHistory,
    Presence,
    Rate,
    RateLimit,
    by_client,
    by_metadata,
    from_query,
    roles,
)

__all__ = ["DemoChat", "serve_demo", "serve_demo_backend", "serve_demo_broker"]

logger = logging.getLogger("strands_trio.demo")

AUDIENCE = "strands-trio-demo"
TOKEN_SECONDS = 600

#: The environment variable that gives the token secret, shared by ``--broker-only`` and
#: ``--backend-only`` processes (the broker issues tokens, the backend verifies them).
SECRET_VARIABLE = "STRANDS_DEMO_SECRET"

#: The backend retries a lost broker quickly (0.25 s, then every half second), so that a
#: restarted broker has its backend back well within the page's 2 s.
BACKEND_CONFIG = ClientConfig(reconnect_delay=0.25, max_reconnect_delay=0.5)

#: What the page is made of: (path, file in ``_demo_static``, content type).
STATIC_FILES = (
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
    ("/favicon.svg", "favicon.svg", "image/svg+xml"),
)


def calls_apart(ctx: ExecutionContext) -> str | None:
    """The rate limit's key: the client's calls (``chat.older`` at sign-in, ``chat.join`` at
    reconnection) have a budget of their own, so that they do not eat the chat lines'."""
    return f"{ctx.client_id}/calls" if ctx.ref is not None else by_client(ctx)


class DemoChat:
    """The demo's chat backend and its token issuer, sharing one secret: *secret*, or a fresh
    one."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or secrets.token_urlsafe(48)
        self.index = index = RoomIndex()
        # Every room of the demo is open to every signed-in user: any may read its history.
        self.history = history = History(
            store=MemoryHistory(size=100, max_age=600),
            types={"said"},
            can_recover=lambda ctx, room: True,
        )
        self.presence = presence = Presence(fields={"name": by_metadata("name")})
        #: Calls and messages refused with ``bad_room``.
        self.refused = 0
        #: The rooms each client joined besides its connect-time room (this backend's joins).
        self.joined: dict[str, set[str]] = {}
        self.app = app = StrandsApp(
            middleware=[
                Logging(),
                Auth(
                    verifier=JWTVerifier(key=self.secret, algorithms=("HS256",), audience=AUDIENCE),
                    source=from_query("token"),
                ),
                presence,
                RateLimit(messages=Rate(burst=5, per_second=1), message_key=calls_apart),
                history,
            ],
            config=BACKEND_CONFIG,
        )
        joined_rooms = self.joined

        for kind, model in (("joined", Joined), ("left", Left), ("said", Said)):
            app.outgoing(kind)(model)
        app.outgoing("members")(Members)
        app.outgoing("announcement")(Announcement)

        async def roll_call(room: str) -> None:
            # Presence has recorded the join (or the leave) before the handler runs.
            names = [member.fields.get("name", "?") for member in await presence.members(room)]
            await app.send_room_message(room, Members(room=room, names=names))

        def rooms_of(context: Context) -> list[str]:
            return [context.room_id, *sorted(joined_rooms.get(context.client_id, ()))]

        def room_of(context: Context, room: str) -> str:
            """*room* ("": the connect-time room) if the client is in it, else BadRoom."""
            if room and room not in rooms_of(context):
                raise BadRoom(f"you are not in room {room[:40]!r}: join it first")
            return room or context.room_id

        @app.on_connection_request
        async def place(request: ConnectionRequestContext) -> bool:
            room = request.path.removeprefix("/ws/").strip("/") or "lobby"
            identity = IDENTITY.get(request)
            request.context.room_id = room
            request.context.metadata["name"] = identity.subject if identity else "?"
            return True

        @app.on_new_connection
        async def connected(context: Context) -> None:
            await app.send_room_message(
                context.room_id, Joined(name=context.metadata["name"], room=context.room_id)
            )
            await roll_call(context.room_id)

        @app.on_disconnect
        async def left(context: Context) -> None:
            rooms = rooms_of(context)
            joined_rooms.pop(context.client_id, None)
            for room in rooms:
                await app.send_room_message(room, Left(name=context.metadata["name"], room=room))
                await roll_call(room)

        @app.on_message("chat.say", model=Say)
        async def say(payload: Say, context: Context) -> None:
            room = room_of(context, payload.room)
            name = context.metadata["name"]
            # Through the history: kept with the room's next offset, recovered by pages that
            # were away; the index keeps it for "load older".
            position = await history.send_room_message(
                app, room, Said(name=name, text=payload.text)
            )
            if position is not None:
                index.add(room, position.epoch, Line(position.offset, name, payload.text))

        @app.on_message("chat.older", model=Older)
        async def older(payload: Older, context: Context) -> Lines:
            return index.older(room_of(context, payload.room), payload.before)

        @app.on_message("chat.join", model=RoomRequest)
        async def join(payload: RoomRequest, context: Context) -> Members:
            room = check_room(payload.room)
            mine = joined_rooms.setdefault(context.client_id, set())
            if room != context.room_id and room not in mine:
                if len(mine) >= MAX_JOINED:
                    raise BadRoom(f"you are in {MAX_JOINED + 1} rooms already: leave one first")
                await app.join_room(context.client_id, room)
                mine.add(room)
                await app.send_room_message(room, Joined(name=context.metadata["name"], room=room))
                await roll_call(room)
            names = [member.fields.get("name", "?") for member in await presence.members(room)]
            return Members(room=room, names=names)

        @app.on_message("chat.leave", model=RoomRequest)
        async def leave(payload: RoomRequest, context: Context) -> None:
            room = payload.room
            if room == context.room_id:
                raise BadRoom(f"{room[:40]!r} is the room you signed in to: it cannot be left")
            mine = joined_rooms.get(context.client_id, set())
            if room not in mine:
                raise BadRoom(f"you are not in room {room[:40]!r}")
            await app.leave_room(context.client_id, room)
            mine.discard(room)
            await app.send_room_message(room, Left(name=context.metadata["name"], room=room))
            await roll_call(room)

        @app.exception_handler(BadRoom)
        async def bad_room(ctx: ExecutionContext, exc: BadRoom) -> None:
            # A page's mistake, not the backend's: logged in one line, counted, answered.
            self.refused += 1
            logger.info("refused (bad_room): %s", exc.client_reason)
            await ctx.send_error(BadRoom.error_code, exc.client_reason)

        @roles("admin")
        @app.on_message("chat.announce", model=Announce)
        async def announce(payload: Announce, context: Context) -> None:
            announcement = Announcement(name=context.metadata["name"], text=payload.text)
            await app.broadcast_message(announcement)

    def issue_token(self, name: str) -> str:
        """A JWT for *name*, valid for ten minutes; "admin" gets the admin role."""
        import jwt

        now = int(time.time())
        claims = {
            "sub": name,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_SECONDS,
            "roles": ["admin"] if name == "admin" else ["member"],
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def token_route(self, query: str) -> tuple[int, str, bytes]:
        """``GET /token?name=...``: ``{"token": ...}``, or 400 for a missing or odd name."""
        name = (parse_qs(query).get("name") or [""])[0].strip()
        if not (1 <= len(name) <= 32) or not name.isprintable():
            return 400, "application/json", b'{"error": "name: 1 to 32 printable characters"}\n'
        body = json.dumps({"token": self.issue_token(name), "expires_in": TOKEN_SECONDS})
        return 200, "application/json", body.encode()

    def routes(self) -> dict[str, Any]:
        """The page's files and the token endpoint, for ``serve_broker(extra_routes=...)``."""
        files = resources.files(__package__) / "_demo_static"
        table: dict[str, Any] = {"/token": self.token_route}
        for path, name, kind in STATIC_FILES:
            body = (files / name).read_bytes()
            table[path] = lambda query, body=body, kind=kind: (200, kind, body)
        return table


def broker_config(host: str, ws_port: int, tcp_port: int) -> BrokerConfig:
    """The demo broker's settings: the query string reaches the backend (the page's token)."""
    return BrokerConfig(ws_host=host, ws_port=ws_port, tcp_port=tcp_port)


async def serve_demo_broker(
    chat: DemoChat,
    host: str = "127.0.0.1",
    ws_port: int = 8080,
    tcp_port: int = 0,
    *,
    task_status: trio.TaskStatus[BrokerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the broker with the page and *chat*'s token endpoint until cancelled (``demo
    --broker-only``); with ``nursery.start``, returns its address once it listens."""
    await serve_broker(
        broker_config(host, ws_port, tcp_port),
        extra_routes=chat.routes(),
        task_status=task_status,
    )


async def serve_demo_backend(
    chat: DemoChat,
    broker_host: str = "127.0.0.1",
    tcp_port: int = 8081,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run *chat*'s backend against the broker at *broker_host*:*tcp_port* until cancelled
    (``demo --backend-only``), waiting for the broker and reconnecting to it (within a
    half second) when it restarts; with ``nursery.start``, returns once connected."""
    await chat.app.serve(broker_host, tcp_port, task_status=task_status)


async def serve_demo(
    host: str = "127.0.0.1",
    ws_port: int = 8080,
    tcp_port: int = 0,
    *,
    secret: str | None = None,
    task_status: trio.TaskStatus[BrokerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the broker, the demo chat backend and the page until cancelled; with
    ``nursery.start``, returns the broker's address once the backend is connected."""
    chat = DemoChat(secret)
    async with trio.open_nursery() as nursery:
        address: BrokerAddress = await nursery.start(
            partial(serve_demo_broker, chat, host, ws_port, tcp_port)
        )
        await nursery.start(serve_demo_backend, chat, "127.0.0.1", address.tcp_port)
        task_status.started(address)


def run_demo_server(
    host: str, ws_port: int, tcp_port: int, part: str = "both", secret: str | None = None
) -> None:
    """The ``strands-trio demo`` command: serve until Ctrl-C. *part* is ``"both"`` (the
    default: one process), ``"broker"`` or ``"backend"`` (which connects to the broker's
    backend port, *tcp_port*, on *host*)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    chat = DemoChat(secret)

    def banner(address: BrokerAddress | None) -> None:
        if address is None:
            print(f"strands-trio demo: backend connected to {host}:{tcp_port}", flush=True)
            return
        backends = f" (backends on port {address.tcp_port})" if part == "broker" else ""
        print(
            f"strands-trio demo: open http://{host}:{address.ws_port}/ in two browser tabs"
            + backends,
            flush=True,
        )

    async def main() -> None:
        async def start(task_status: trio.TaskStatus[Any]) -> None:
            if part == "broker":
                await serve_demo_broker(chat, host, ws_port, tcp_port, task_status=task_status)
            elif part == "backend":
                await serve_demo_backend(chat, host, tcp_port, task_status=task_status)
            else:
                await serve_demo(host, ws_port, tcp_port, secret=secret, task_status=task_status)

        await serve_until_signal(start, logger, banner)

    trio.run(main)
