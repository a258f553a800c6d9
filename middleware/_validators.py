"""The validators that the middleware's configuration records share.

They are compositions of :mod:`attrs.validators`, so that a refused value gets attrs' wording
(``'level' must be > 0: 0``), which names the field. The core has its own
(``strands_trio._validators``), but the middleware import only public names, as any
third-party middleware would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import attrs
from attrs.validators import and_, instance_of, min_len, not_

__all__ = ["NON_EMPTY_STR", "Validator", "not_bool"]

#: What ``attrs.field(validator=...)`` takes: ``(instance, attribute, value) -> None``, raising
#: for a bad value. Typed loosely so that validators of different value types can be listed
#: together (mypy cannot infer one type for ``[instance_of(int), not_(instance_of(bool))]``).
Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], Any]

#: A string of at least one character.
NON_EMPTY_STR: Validator = and_(instance_of(str), min_len(1))


def not_bool(name: str, what: str = "a number") -> Validator:
    """Refuse a bool, which ``instance_of(int)`` lets through (``bool`` is a subclass of
    ``int``): ``True`` is never meant as a count or a number of seconds.

    Args:
        name: The field's name, for the message (``not_`` does not add it).
        what: What the field should be, for the message.
    """
    return not_(instance_of(bool), msg=f"'{name}' must be {what}, not a bool")
