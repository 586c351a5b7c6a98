"""The checks every public method makes of its arguments, in one place.

A value of the wrong type is an ``ArgumentTypeError`` (both a ``ConfigError`` and a
``TypeError``, so either ``except`` catches it); a value of the right type outside what the
method accepts is a ``ConfigError`` (a ``ValueError``), or ``NotFoundError`` for an LSN the
log does not hold. ``bool`` is not accepted where an integer is meant. Nothing below the
public boundary sees an argument these checks did not pass.
"""

from __future__ import annotations

import math
from typing import Any

from segwal.errors import ArgumentTypeError, ConfigError, InvalidPayloadError
from segwal.format.layout import MAX_LSN


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


# -- what an append takes (checked before the log's lock) ---------------------------------

MAX_TYPE = 0xFFFF


def to_payload(data: Any, index: int | None = None) -> bytes:
    """``data`` as bytes (a copy of a mutable buffer), or InvalidPayloadError."""
    if type(data) is bytes:
        return data
    if isinstance(data, str | int | float) or data is None:
        raise InvalidPayloadError(
            f"payload must be bytes-like, not {type(data).__name__}", index=index
        )
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise InvalidPayloadError(
            f"payload must be bytes-like, not {type(data).__name__}", index=index
        ) from None


def payload_list(payloads: Any) -> list[Any]:
    """The payloads of a batch as a list; one payload alone is refused, not split in bytes."""
    if isinstance(payloads, bytes | bytearray | memoryview | str) or payloads is None:
        raise InvalidPayloadError(
            "append_batch takes an iterable of payloads, not "
            f"{type(payloads).__name__} (wrap a single payload in a list)"
        )
    try:
        return list(payloads)
    except TypeError:
        raise InvalidPayloadError(
            f"append_batch takes an iterable of payloads, not {type(payloads).__name__}"
        ) from None


def exhausted() -> ConfigError:
    return ConfigError(f"the log has used every LSN up to {MAX_LSN}", option="lsn")


def check_type(record_type: Any) -> int:
    if isinstance(record_type, bool) or not isinstance(record_type, int):
        raise ArgumentTypeError(f"type must be an integer, not {record_type!r}", option="type")
    if not 0 <= record_type <= MAX_TYPE:
        raise ConfigError(
            f"type must be between 0 and {MAX_TYPE}, not {record_type}", option="type"
        )
    return record_type
