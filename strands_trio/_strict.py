"""The strict cattrs converter every other one starts from, and how its errors read.

Strings, booleans, integers, lists and objects are checked, not coerced: the wire protocol is
typed, and a backend should not act on a number where a client id belongs. A JSON object typed
``dict[str, Any]`` (metadata) is passed through as it is, not copied. Nothing here knows the
frames or the contexts, so :mod:`strands_trio.context` can structure its own models with it
without depending on the codec.
"""

from __future__ import annotations

from typing import Any

import cattrs
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

__all__ = ["describe_error", "make_strict_converter", "model_converter"]


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


def make_strict_converter(*, detailed_validation: bool = False) -> OrjsonConverter:
    """A converter that checks types instead of coercing them.

    Args:
        detailed_validation: Collect every error with its path (slower; for messages).
    """
    converter = _make_orjson_converter(detailed_validation=detailed_validation)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    # Generic aliases are matched by equality (single dispatch only knows classes).
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], _json_object)
    converter.register_structure_hook_func(lambda t: t == dict[str, list[str]], _headers)
    return converter


_MODEL: list[OrjsonConverter] = []


def model_converter() -> OrjsonConverter:
    """The strict, detailed converter of ``Context.from_json()`` and friends (made once)."""
    if not _MODEL:
        _MODEL.append(make_strict_converter(detailed_validation=True))
    return _MODEL[0]


def describe_error(exc: BaseException) -> str:
    """Render a structuring error as ``"reason @ $.path"`` strings joined by ``"; "``."""
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="$"))
    return str(exc) or type(exc).__name__
