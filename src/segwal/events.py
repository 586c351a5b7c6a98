"""What an open log tells its observers: one small value per notable event.

``wal.observe(callback)`` registers a callable that receives each event; it returns a
function that unregisters it. This is the hook the edge modules (metrics, logging, the
archive) build on; the core never imports them. Callbacks run synchronously on the thread
that caused the event, sometimes under the log's lock: they must be quick and must not call
back into the log (queue the work instead). An exception in a callback is logged and
swallowed: an observer can never fail an append.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from segwal.types import Cut, SegmentInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Sealed:
    """A segment was sealed: it never changes again (the archive uploads it)."""

    segment: SegmentInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotated:
    """A new active segment starts at ``first_lsn``; ``reason`` is size, age, limit or forced."""

    reason: str
    path: str
    first_lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewound:
    """``truncate_after(lsn)``: LSNs above ``lsn`` will be written again with other bytes."""

    lsn: int
    rewinds: int  # the log's rewind count after this one


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentDeleted:
    """A sealed segment left the log (``rule``: the retention rule, or a truncation)."""

    path: str
    first_lsn: int
    last_lsn: int
    size_bytes: int
    rule: str
    deferred: bool  # a reader was on it: the file goes when the reader lets go


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    """The group commit's data barrier (fdatasync of the active segment) took ``seconds``."""

    site: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Durable:
    """The durable LSN advanced (readers and followers may go on to ``lsn``)."""

    lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCut:
    """Opening the log cut a torn or damaged tail."""

    cut: Cut


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkDetected:
    """A process forked from the writer tried to change the log; it was refused."""

    pid: int
    parent_pid: int


Event = Sealed | Rotated | Rewound | SegmentDeleted | Synced | Durable | RecoveryCut | ForkDetected
Observer = Callable[[Event], object]

__all__ = [
    "Durable",
    "Event",
    "ForkDetected",
    "Observer",
    "RecoveryCut",
    "Rewound",
    "Sealed",
    "SegmentDeleted",
    "Synced",
]
