"""The cattrs converters that turn JSON data into frames and contexts, and back.

Theory of operation: :func:`make_converter` is the one factory for frames (cattrs' global
converter is never used), on the strict converter of ``_strict.py``: the wire protocol is typed
and a backend should not act on a number where a client id belongs.

With ``wire=True`` it also corrects the reference broker's quirks (WIRE.md), so that this is
the one place they are handled:

- quirk 1, nested metadata: a context whose metadata is the broker's copy of the whole accepted
  ``response`` params is unwrapped to the metadata the backend set;
- quirk 2, two shapes of ``error``: an error context that is a connection request (``headers``,
  ``url``, ``remote_addr``) becomes a :class:`ConnectionRequestContext`, not a crash.

Two converters are kept per use: a fast one without detailed validation for the hot path, and
a detailed one that is only run again on data that failed, to say exactly what was wrong as
``"reason @ $.path"``.
"""

from __future__ import annotations

from typing import Any

from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter

from .._strict import describe_error, make_strict_converter
from ..context import ConnectionRequestContext, Context
from ._frames import ACTION_TYPES, EVENT_TYPES, ConnectionRequest, Disconnected, Response

__all__ = ["describe_error", "make_converter"]


def unwrap_metadata(metadata: dict[str, Any], client_id: str) -> dict[str, Any]:
    """Undo WIRE.md quirk 1: the reference broker keeps the whole accepted ``response`` params
    as a client's metadata. Anything else is returned unchanged."""
    if (
        len(metadata) <= 4
        and metadata.get("accepted") is True
        and metadata.get("client_id") == client_id
        and "room_id" in metadata
        and (len(metadata) == 3 or "metadata" in metadata)
    ):
        inner = metadata.get("metadata")
        if inner is None:
            return {}
        if type(inner) is dict:
            return inner
    return metadata


def make_converter(*, wire: bool, detailed_validation: bool = False) -> OrjsonConverter:
    """Make a strict converter for frames and contexts.

    Args:
        wire: Correct the reference broker's quirks (for frames read off the wire).
        detailed_validation: Collect every error with its path (slower; for messages).
    """
    converter = make_strict_converter(detailed_validation=detailed_validation)
    if not wire:
        return converter

    structure_context = make_dict_structure_fn(Context, converter)

    def context_hook(value: Any, cls: type[Context]) -> Context:
        context = structure_context(value, cls)
        if context.metadata:
            context.metadata = unwrap_metadata(context.metadata, context.client_id)
        return context

    converter.register_structure_hook(Context, context_hook)

    structure_connection_request = make_dict_structure_fn(ConnectionRequest, converter)

    def connection_request_hook(value: Any, cls: type[ConnectionRequest]) -> ConnectionRequest:
        # ``query`` is an extension: one of the wrong type is ignored, the request is not lost.
        if type(value) is dict and "query" in value and type(value["query"]) is not str:
            value = {key: item for key, item in value.items() if key != "query"}
        return structure_connection_request(value, cls)

    converter.register_structure_hook(ConnectionRequest, connection_request_hook)

    structure_disconnected = make_dict_structure_fn(Disconnected, converter)

    def disconnected_hook(value: Any, cls: type[Disconnected]) -> Disconnected:
        # ``rooms`` is an extension: one that is not a list of strings is read as None.
        if type(value) is dict and value.get("rooms") is not None:
            rooms = value["rooms"]
            if not (type(rooms) is list and all(type(room) is str for room in rooms)):
                value = {key: item for key, item in value.items() if key != "rooms"}
        return structure_disconnected(value, cls)

    converter.register_structure_hook(Disconnected, disconnected_hook)

    structure_request = make_dict_structure_fn(
        ConnectionRequestContext,
        converter,
        context=override(omit=True),
        accepted=override(omit=True),
        reason=override(omit=True),
        code=override(omit=True),
    )

    def error_context_hook(value: Any, _: Any) -> Context | ConnectionRequestContext:
        if type(value) is dict and "headers" in value:
            request = structure_request(value, ConnectionRequestContext)
            request.accepted = False  # never answered: it came while no backend was there
            return request
        return converter.structure(value, Context)

    converter.register_structure_hook(Context | ConnectionRequestContext, error_context_hook)
    converter.register_unstructure_hook(
        ConnectionRequestContext,
        lambda r: {
            "headers": r.headers,
            "url": r.url,
            "remote_addr": r.remote_addr,
            **({"query": r.query} if r.query else {}),  # an extension: only when there is one
        },
    )
    for cls in (*EVENT_TYPES, *ACTION_TYPES):
        # The frame's fields are request_id plus the params; request_id lives outside params.
        converter.register_unstructure_hook(
            cls,
            make_dict_unstructure_fn(
                cls,
                converter,
                _cattrs_omit_if_default=cls in (Response, ConnectionRequest, Disconnected),
                request_id=override(omit=True),
            ),
        )
    return converter
