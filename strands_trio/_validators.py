"""The attrs validators the settings records share, composed from :mod:`attrs.validators`.

Each raises :class:`ValueError` (or :class:`TypeError` for a wrong type) naming the field, as
attrs does: ``'max_concurrency' must be >= 1: 0``.
"""

from __future__ import annotations

import math
from typing import Any

from attrs import validators as v

__all__ = ["COUNT", "JITTER", "NON_NEGATIVE", "OPTIONAL_POSITIVE", "PORT", "POSITIVE"]

#: A number of seconds (or a factor) above zero, and finite.
POSITIVE = v.and_(v.gt(0.0), v.lt(math.inf))
#: The same, or ``None`` for "no limit". (Typed ``Any``: mypy's attrs plugin types a field by
#: its default, ``float``, and would refuse a validator of ``float | None``.)
OPTIONAL_POSITIVE: Any = v.optional(POSITIVE)
#: A number of seconds that may be zero, and finite.
NON_NEGATIVE = v.and_(v.ge(0.0), v.lt(math.inf))
#: A fraction that stays below one (a jitter: a delay never shrinks to nothing).
JITTER = v.and_(v.ge(0.0), v.lt(1.0))
#: A count or a size: an integer, at least 1.
COUNT = v.and_(v.instance_of(int), v.ge(1))
#: A TCP port, ``0`` meaning "pick a free one".
PORT = v.and_(v.instance_of(int), v.ge(0), v.le(65535))
