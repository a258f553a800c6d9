"""Metadata on handlers: :func:`set_metadata` writes it, the :class:`Reflector` reads it.

A decorator such as ``@roles("admin")`` is ``set_metadata("roles", ("admin",))``; a guard reads
it back with ``reflector.get("roles", ctx.get_handler())``. Per-handler middleware, guards and
exception handlers (:func:`use_middleware`, :func:`use_guards`, :func:`use_exception_handlers`)
are metadata too, read once when the client builds its pipeline.

Metadata lives in a dict attribute of the function (or class) itself, so it costs nothing per
event and follows the function wherever it is registered. Decorators may be stacked in any
order with the app's ``@app.on_*`` decorators: the pipeline is built when the app starts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = [
    "Reflector",
    "reflector",
    "set_metadata",
    "use_exception_handlers",
    "use_guards",
    "use_middleware",
]

F = TypeVar("F")

_ATTRIBUTE = "__strands_metadata__"
MIDDLEWARE_KEY = "strands:middleware"
GUARDS_KEY = "strands:guards"
EXCEPTION_HANDLERS_KEY = "strands:exception_handlers"

_MISSING = object()


def _owner(target: Any) -> Any:
    # A bound method's metadata is its function's: decorators ran on the function.
    return getattr(target, "__func__", target)


def _table(target: Any, *, create: bool) -> dict[Hashable, Any] | None:
    owner = _owner(target)
    if isinstance(owner, type):
        table = owner.__dict__.get(_ATTRIBUTE)  # a class's own, not inherited by subclasses
    else:
        table = getattr(owner, _ATTRIBUTE, None)
    if table is None and create:
        table = {}
        try:
            setattr(owner, _ATTRIBUTE, table)
        except (AttributeError, TypeError) as exc:
            raise TypeError(f"cannot set metadata on {target!r}: it has no __dict__") from exc
    return table


def set_metadata(key: Hashable, value: Any) -> Callable[[F], F]:
    """A decorator that stores *value* under *key* on a handler function or class::

        def roles(*names):
            return set_metadata("roles", names)

        @roles("admin")
        @app.on_message("room.close")
        async def close_room(payload, context): ...

    Setting a key twice on one target keeps the last value set (the decorator nearest the
    ``def`` runs first, so the one on top wins).
    """

    def decorate(target: F) -> F:
        table = _table(target, create=True)
        assert table is not None
        table[key] = value
        return target

    return decorate


def _prepend(key: str, items: tuple[Any, ...]) -> Callable[[F], F]:
    def decorate(target: F) -> F:
        table = _table(target, create=True)
        assert table is not None
        # Decorators run bottom-up: prepending keeps the one on top outermost.
        table[key] = items + table.get(key, ())
        return target

    return decorate


def use_middleware(*middleware: Any) -> Callable[[F], F]:
    """Run *middleware* around this handler only, inside the app's own middleware.

    Listed outermost first; with several ``@use_middleware`` the one on top is outermost.
    """
    return _prepend(MIDDLEWARE_KEY, middleware)


def use_guards(*guards: Any) -> Callable[[F], F]:
    """Check *guards* before this handler, after the app's own guards."""
    return _prepend(GUARDS_KEY, guards)


def use_exception_handlers(*handlers: Any) -> Callable[[F], F]:
    """Try *handlers* for an exception from this handler before the app's own."""
    return _prepend(EXCEPTION_HANDLERS_KEY, handlers)


class Reflector:
    """Reads what :func:`set_metadata` stored on handlers and classes (as Ellar's and Nest's
    ``Reflector``)::

        required = reflector.get_all_and_override("roles", ctx.get_handler(), ctx.get_class())
    """

    def get(self, key: Hashable, target: Any, default: Any = None) -> Any:
        """The value of *key* on *target* (a function, bound method or class), or *default*."""
        if target is None:
            return default
        table = _table(target, create=False)
        if table is None:
            return default
        return table.get(key, default)

    def get_all(self, key: Hashable, *targets: Any) -> list[Any]:
        """The value of *key* on each target, ``None`` where it is not set."""
        return [self.get(key, target) for target in targets]

    def get_all_and_override(self, key: Hashable, *targets: Any) -> Any:
        """The value of *key* on the first target that has it (handler before class), or
        ``None``."""
        for target in targets:
            value = self.get(key, target, _MISSING)
            if value is not _MISSING:
                return value
        return None

    def get_all_and_merge(self, key: Hashable, *targets: Any) -> Any:
        """The values of *key* on all targets, merged: dicts into one dict (earlier targets
        win), everything else concatenated into one list. ``None`` if no target has it."""
        values = [v for v in (self.get(key, t, _MISSING) for t in targets) if v is not _MISSING]
        if not values:
            return None
        if all(isinstance(v, dict) for v in values):
            merged: dict[Any, Any] = {}
            for value in reversed(values):
                merged.update(value)
            return merged
        out: list[Any] = []
        for value in values:
            if isinstance(value, list | tuple | set | frozenset):
                out.extend(value)
            else:
                out.append(value)
        return out


#: The shared reflector; it holds no state, so one instance serves everyone.
reflector = Reflector()
