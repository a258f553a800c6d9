"""The cattrs converters that turn JSON data into frames and contexts, and back.

Theory of operation: :func:`make_converter` is the one factory (cattrs' global converter is
never used). It makes cattrs strict, since the wire protocol is typed and a backend should not
act on a number where a client id belongs: strings, booleans, lists and objects are checked,
not coerced. A JSON object typed ``dict[str, Any]`` (metadata) is passed through as it is, not
copied.

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

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from ..context import ConnectionRequestContext, Context
from ._frames import ACTION_TYPES, EVENT_TYPES, Response

__all__ = ["MODEL_CONVERTER", "describe_error", "make_converter"]


def _strict_str(value: Any, _: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if type(value) is not int:  # bool is an int subclass, and "1" is a string
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_bool(value: Any, _: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _json_object(value: Any, _: Any) -> dict[str, Any]:
    if value is None:  # Go's nil map
        return {}
    if type(value) is not dict:
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _headers(value: Any, _: Any) -> dict[str, list[str]]:
    if type(value) is not dict:
        raise TypeError(f"expected an object of header lists, got {type(value).__name__}")
    for name, values in value.items():
        if type(values) is not list or any(type(v) is not str for v in values):
            raise TypeError(f"header {name!r}: expected a list of strings")
    return value


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
    converter = _make_orjson_converter(detailed_validation=detailed_validation)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    # Generic aliases are matched by equality (single dispatch only knows classes).
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], _json_object)
    converter.register_structure_hook_func(lambda t: t == dict[str, list[str]], _headers)
    if not wire:
        return converter

    structure_context = make_dict_structure_fn(Context, converter)

    def context_hook(value: Any, cls: type[Context]) -> Context:
        context = structure_context(value, cls)
        if context.metadata:
            context.metadata = unwrap_metadata(context.metadata, context.client_id)
        return context

    converter.register_structure_hook(Context, context_hook)

    structure_request = make_dict_structure_fn(
        ConnectionRequestContext,
        converter,
        context=override(omit=True),
        accepted=override(omit=True),
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
        lambda r: {"headers": r.headers, "url": r.url, "remote_addr": r.remote_addr},
    )
    for cls in (*EVENT_TYPES, *ACTION_TYPES):
        # The frame's fields are request_id plus the params; request_id lives outside params.
        converter.register_unstructure_hook(
            cls,
            make_dict_unstructure_fn(
                cls,
                converter,
                _cattrs_omit_if_default=cls is Response,
                request_id=override(omit=True),
            ),
        )
    return converter


def describe_error(exc: BaseException) -> str:
    """Render a structuring error as ``"reason @ $.path"`` strings joined by ``"; "``."""
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="$"))
    return str(exc) or type(exc).__name__


#: For ``Context.from_json()`` and friends: strict, detailed, and no wire quirks.
MODEL_CONVERTER = make_converter(wire=False, detailed_validation=True)
