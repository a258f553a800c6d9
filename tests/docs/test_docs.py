"""The docs' code runs: every Python block in the docs is taken from a file under
docs/examples, and those files are exercised here (docs/examples/test_echo.py is collected
as a test of its own)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from strands_trio.testing import ConnectionRejected, open_fake_broker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def example_texts() -> list[str]:
    return [path.read_text() for path in EXAMPLES.glob("*.py")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_come_from_example_files(page: Path) -> None:
    """A Python block in a page is a verbatim excerpt of an example file, so it cannot drift
    from code that runs."""
    texts = example_texts()
    for block in BLOCK.findall(page.read_text()):
        assert any(block.strip() in text for text in texts), (
            f"{page.name}: not in docs/examples:\n{block}"
        )


async def test_chat_app_example() -> None:
    """docs/examples/chat_app.py admits by token and echoes to the room."""
    from docs.examples.chat_app import app

    async with open_fake_broker() as broker, app.connected(connect=broker.open_backend_stream):
        with pytest.raises(ConnectionRejected):
            await broker.connect("/ws/room")
        ws = await broker.connect("/ws/room", headers={"Authorization": "Bearer valid-token"})
        await ws.send("hi")
        assert await ws.receive() == "echo: hi"
        await ws.close()


async def test_embedding_example(autojump_clock: trio.testing.MockClock) -> None:
    """docs/examples/embedding.py's periodic task broadcasts through the app it serves."""
    from docs.examples import embedding

    async with open_fake_broker() as broker, trio.open_nursery() as nursery:
        await nursery.start(partial(embedding.app.serve, connect=broker.open_backend_stream))
        nursery.start_soon(embedding.announce_every_minute)
        await trio.sleep(125)
        assert broker.broadcasts == ["a minute has passed"] * 2
        nursery.cancel_scope.cancel()


async def test_browser_backend_example() -> None:
    """docs/examples/browser_backend.py: a token from the query or a subprotocol, the room
    from the path, query parameters in metadata, readable refusals (4401, 4404)."""
    from docs.examples.browser_backend import app

    async with (
        open_fake_broker(reference=False) as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        ann = await broker.connect("/ws/lobby?token=t-ann&lang=fr")
        assert (ann.room_id, ann.metadata["lang"]) == ("lobby", "fr")
        offer = {"Sec-WebSocket-Protocol": "strands, bearer.t-bob"}
        bob = await broker.connect("/ws/lobby", headers=offer)
        assert (bob.room_id, bob.subprotocol) == ("lobby", "strands")
        with pytest.raises(ConnectionRejected) as refused:
            await broker.connect("/ws/lobby?token=nope")
        assert (refused.value.close_code, str(refused.value)) == (4401, "unknown API key")
        with pytest.raises(ConnectionRejected) as refused:
            await broker.connect("/ws/?token=t-ann")
        assert (refused.value.close_code, str(refused.value)) == (4404, "connect to /ws/<room>")
