"""What a truncation would do, decided from segment infos alone, and what it did.

``plan_truncate`` is the one place that decides what ``truncate_before`` and
``truncate_after`` do to each segment and whether a hold or a cursor refuses them; the log
carries out the plan it returns, and ``wal.truncate_plan`` (the CLI's dry run) shows the
same plan, so a dry run and a real run always agree. Pure: no file, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from segwal.errors import ConfigError, HoldError, NotFoundError
from segwal.log import arguments
from segwal.log.retention import Rules, decide, lowest_hold
from segwal.types import SegmentInfo

CURSOR_HOLD_PREFIX = "cursor:"  # a consumer cursor named c1 holds as "cursor:c1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Deletion:
    """One segment that retention or a truncation deleted, and the rule that did it."""

    path: str
    first_lsn: int
    last_lsn: int
    size_bytes: int
    rule: str
    deferred: bool = False  # a live reader was on it: the file goes when the reader is done


@dataclass(frozen=True, slots=True, kw_only=True)
class TruncateResult:
    """What ``truncate_before`` or ``truncate_after`` did."""

    segments_deleted: int
    bytes_reclaimed: int
    first_lsn: int
    last_lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionResult:
    """What ``apply_retention`` or ``prune_through`` deleted."""

    deleted: tuple[Deletion, ...]
    bytes_reclaimed: int
    first_lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentAction:
    """What a truncation does to one segment: delete it, rewrite it shorter, or keep it."""

    segment: SegmentInfo
    action: Literal["delete", "rewrite", "keep"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TruncatePlan:
    """What ``truncate_before(lsn)`` (``operation="before"``) or ``truncate_after(lsn)``
    would do now. A plan that a hold refuses is never made: planning raises HoldError."""

    operation: Literal["before", "after"]
    lsn: int
    first_lsn: int  # the log's LSNs now
    last_lsn: int
    new_first_lsn: int  # and after the truncation
    new_last_lsn: int
    segments: tuple[SegmentAction, ...]

    @property
    def changes(self) -> bool:
        """False when the truncation would leave the log as it is."""
        return (self.new_first_lsn, self.new_last_lsn) != (self.first_lsn, self.last_lsn)

    @property
    def deleted(self) -> tuple[SegmentInfo, ...]:
        return tuple(a.segment for a in self.segments if a.action == "delete")

    @property
    def bytes_reclaimed(self) -> int:
        """Bytes of the segments deleted (a rewritten segment's cut is not counted)."""
        return sum(s.size_bytes for s in self.deleted)


def check_range(what: str, lsn: int, low: int, high: int, first: int, last: int) -> None:
    """Raise NotFoundError, saying what would work, unless ``low <= lsn <= high``."""
    if not low <= lsn <= high:
        raise NotFoundError(
            f"cannot {what} LSN {lsn}: the log holds LSNs {first}..{last} (use {low}..{high})",
            lsn=lsn,
            first_lsn=first,
            last_lsn=last,
        )


def plan_truncate(
    segments: Sequence[SegmentInfo],
    *,
    first: int,
    last: int,
    holds: Mapping[str, int],
    before: int | None = None,
    after: int | None = None,
) -> TruncatePlan:
    """Plan ``truncate_before(before)`` or ``truncate_after(after)``; give exactly one.

    ``holds`` are every hold in force, consumer cursors included (``cursor:NAME``).
    Raises ConfigError, NotFoundError or HoldError exactly as the truncation itself would.
    """
    if (before is None) == (after is None):
        raise ConfigError("give exactly one of before= or after=", option="before")
    actions: list[SegmentAction] = []
    if before is not None:
        lsn = arguments.lsn(before, "before")
        check_range("truncate before", lsn, first, last + 1, first, last)
        hold = lowest_hold(holds)
        if hold is not None and lsn > hold[1]:
            raise HoldError(hold[0], hold[1], lsn)
        # The rule retention applies for a checkpoint: the same decisions, by one function.
        decisions = decide(segments, Rules(before_lsn=lsn), now_us=0, holds=holds)
        for d in decisions:
            gone = lsn > first and d.delete
            actions.append(SegmentAction(segment=d.segment, action="delete" if gone else "keep"))
        return TruncatePlan(
            operation="before",
            lsn=lsn,
            first_lsn=first,
            last_lsn=last,
            new_first_lsn=max(first, lsn),
            new_last_lsn=last,
            segments=tuple(actions),
        )
    lsn = arguments.lsn(after, "after")
    check_range("truncate after", lsn, first - 1, last, first, last)
    for s in segments:
        if lsn < last and s.first_lsn > lsn:
            action: Literal["delete", "rewrite", "keep"] = "delete"
        elif lsn < last and s.last_lsn > lsn:
            action = "rewrite"  # its records after the LSN are cut off
        else:
            action = "keep"
        actions.append(SegmentAction(segment=s, action=action))
    return TruncatePlan(
        operation="after",
        lsn=lsn,
        first_lsn=first,
        last_lsn=last,
        new_first_lsn=first,
        new_last_lsn=lsn,
        segments=tuple(actions),
    )
