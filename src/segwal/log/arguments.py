"""The checks every public method makes of its arguments, in one place.

A value of the wrong type is an ``ArgumentTypeError`` (both a ``ConfigError`` and a
``TypeError``, so either ``except`` catches it); a value of the right type outside what the
method accepts is a ``ConfigError`` (a ``ValueError``), or ``NotFoundError`` for an LSN the
log does not hold. ``bool`` is not accepted where an integer is meant. Nothing below the
public boundary sees an argument these checks did not pass.
"""

from __future__ import annotations

import math

from segwal.errors import ArgumentTypeError, ConfigError


def _name_of(value: object) -> str:
    return type(value).__name__


def integer(value: object, name: str) -> int:
    """An int (not a bool)."""
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer, not {_name_of(value)}", option=name)
    return int(value)


def lsn(value: object, name: str = "lsn") -> int:
    """An LSN argument: an int (not a bool); its range is checked against the log."""
    return integer(value, name)


def optional_lsn(value: object, name: str) -> int | None:
    return None if value is None else integer(value, name)


def at_least_one(value: object, name: str) -> int:
    """A count or size limit of a read: an int of at least 1."""
    count = integer(value, name)
    if count < 1:
        raise ConfigError(f"{name} must be at least 1, not {count}", option=name)
    return count


def timeout(value: object, name: str = "timeout") -> float | None:
    """Seconds to wait: None (for ever) or a finite number of at least 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError(
            f"{name} must be a number of seconds or None, not {_name_of(value)}", option=name
        )
    seconds = float(value)
    if not math.isfinite(seconds) and seconds != math.inf:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}", option=name)
    if seconds < 0:
        raise ConfigError(f"{name} must be at least 0, not {value!r}", option=name)
    return None if seconds == math.inf else seconds


def flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, not {_name_of(value)}", option=name)
    return value
