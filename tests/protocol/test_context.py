"""Context models: typed, strict, and used the way the asyncio peer's models are used."""

from __future__ import annotations

import pytest
from pystrands.context import ConnectionRequestContext as PeerRequest
from pystrands.context import Context as PeerContext

import strands_trio
from strands_trio.context import ConnectionRequestContext, Context

CONTEXT = {"client_id": "alice-1", "room_id": "chat", "metadata": {"role": "admin"}}
REQUEST = {
    "headers": {"Authorization": ["Bearer x"], "Sec-Websocket-Key": ["k"]},
    "url": "/ws/chat",
    "remote_addr": "127.0.0.1:5000",
    "context": CONTEXT,
    "accepted": True,
}


def test_reexported_from_the_package() -> None:
    """The models live in strands_trio.context, as pystrands.context, and at the top level."""
    assert strands_trio.Context is Context
    assert strands_trio.ConnectionRequestContext is ConnectionRequestContext


def test_context_round_trip_matches_the_peer() -> None:
    """from_json/to_json read and write the same JSON object as the peer's Context."""
    ours, peer = Context.from_json(CONTEXT), PeerContext.from_json(CONTEXT)
    for name in ("client_id", "room_id", "metadata"):
        assert getattr(ours, name) == getattr(peer, name)
    assert ours.to_json() == peer.to_json() == CONTEXT


def test_request_is_used_like_the_peer() -> None:
    """Code written for the peer's request (set room, metadata, accepted) works unchanged and
    to_json gives plain JSON, with the nested context as a dict (the peer leaves the object)."""
    ours = ConnectionRequestContext.from_json(REQUEST)
    peer = PeerRequest.from_json({**REQUEST, "context": PeerContext.from_json(CONTEXT)})
    for request in (ours, peer):
        request.context.room_id = request.url.strip("/")
        request.context.metadata = {"user": "alice"}
        request.accepted = False
    assert ours.to_json() == {**peer.to_json(), "context": peer.context.to_json()}
    assert ours.to_json()["context"] == {
        "client_id": "alice-1",
        "room_id": "ws/chat",
        "metadata": {"user": "alice"},
    }


def test_request_accepts_a_context_object() -> None:
    """from_json takes the nested context as a dict or as a Context."""
    request = ConnectionRequestContext.from_json({**REQUEST, "context": Context.from_json(CONTEXT)})
    assert request.context == Context.from_json(CONTEXT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"room_id": "r"}, "required field missing @ $.client_id"),
        ({"client_id": 1, "room_id": "r"}, "expected str @ $.client_id"),
        ({"client_id": "c", "room_id": "r", "metadata": [1]}, "$.metadata"),
    ],
)
def test_context_from_json_is_strict(data: dict[str, object], message: str) -> None:
    """Missing fields and wrong types are refused with the path of the culprit, where the
    peer would quietly build an object full of None or numbers."""
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        Context.from_json(data)


def test_request_from_json_is_strict() -> None:
    """A header value that is not a list of strings is refused."""
    with pytest.raises(ValueError, match="headers"):
        ConnectionRequestContext.from_json({**REQUEST, "headers": {"A": "b"}})


def test_metadata_defaults_to_a_fresh_dict() -> None:
    """Each context gets its own metadata dict."""
    first, second = Context(client_id="a", room_id="r"), Context(client_id="b", room_id="r")
    first.metadata["x"] = 1
    assert second.metadata == {}


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_header_lookup_ignores_case(name: str) -> None:
    """header() finds Go-canonicalised names whatever the case asked, first value only."""
    request = ConnectionRequestContext(headers={"Authorization": ["Bearer a", "Bearer b"]})
    assert request.header(name) == "Bearer a"


def test_header_lookup_default() -> None:
    """A missing header, or one with no values, gives the default."""
    request = ConnectionRequestContext(headers={"X-Empty": []})
    assert request.header("cookie") is None
    assert request.header("x-empty", "none") == "none"


def test_path_query_and_params() -> None:
    """path drops a query glued to the url; query_params and param read the query field (or
    the glued query when there is none), percent-decoded, blank values kept."""
    request = ConnectionRequestContext(url="/ws/a%20b", query="t=x%2By&t=2&flag")
    assert request.path == "/ws/a%20b"
    assert request.query_params == {"t": ["x+y", "2"], "flag": [""]}
    assert (request.param("t"), request.param("flag"), request.param("no", "d")) == ("x+y", "", "d")
    glued = ConnectionRequestContext(url="/ws/room?token=abc")
    assert (glued.path, glued.param("token")) == ("/ws/room", "abc")
    assert ConnectionRequestContext(url="/ws/room").query_params == {}


def test_refuse_sets_the_answer_and_checks_the_code() -> None:
    """refuse() sets accepted, reason and code and returns False; a code outside 400-599 and
    4000-4999 is refused eagerly."""
    request = ConnectionRequestContext()
    assert request.refuse("name taken", code=409) is False
    assert (request.accepted, request.reason, request.code) == (False, "name taken", 409)
    assert request.refuse() is False
    assert (request.reason, request.code) == (None, None)
    for bad in (200, 1000, 5000, True):
        with pytest.raises(ValueError, match="between 400 and 599"):
            request.refuse("x", code=bad)


def test_to_json_has_query_only_when_there_is_one() -> None:
    """A request without a query keeps the peer's JSON shape; one with it round-trips."""
    assert "query" not in ConnectionRequestContext(url="/ws/x").to_json()
    request = ConnectionRequestContext(url="/ws/x", query="a=1")
    assert ConnectionRequestContext.from_json(request.to_json()).query == "a=1"
