"""Which sealed segments may go: retention rules, holds and the oldest-first rule, decided
from segment infos alone (no payload is read, no clock is read, nothing is deleted here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from segwal.types import SegmentInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What retention decides for one segment."""

    segment: SegmentInfo
    delete: bool
    rule: str | None = None  # the rule that wants it gone (see Rules)
    kept_by: str | None = None  # why it stays although a rule would delete it

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.segment.path,
            "first_lsn": self.segment.first_lsn,
            "last_lsn": self.segment.last_lsn,
            "size_bytes": self.segment.size_bytes,
            "sealed": self.segment.sealed,
            "delete": self.delete,
            "rule": self.rule,
            "kept_by": self.kept_by,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The retention rules in force; None switches a rule off."""

    max_age_us: int | None = None
    max_bytes: int | None = None
    min_segments: int = 0
    prune_through_us: int | None = None  # delete segments whose records are all at or before
    before_lsn: int | None = None  # delete segments whose records are all below (a checkpoint)


def lowest_hold(holds: Mapping[str, int]) -> tuple[str, int] | None:
    """The hold with the lowest LSN, as (name, lsn)."""
    if not holds:
        return None
    name = min(holds, key=lambda n: (holds[n], n))
    return name, holds[name]


def decide(
    segments: Sequence[SegmentInfo],
    rules: Rules,
    *,
    now_us: int,
    holds: Mapping[str, int],
) -> list[Decision]:
    """Decide, oldest first, which segments go; only a prefix of sealed segments can.

    A segment goes when some rule wants it gone and nothing keeps it: the active segment, a
    hold at or below one of its records, the minimum number of sealed segments, or an older
    segment that stays (deleting around it would leave a gap). A segment a live reader is on
    is decided like any other; the caller defers removing its file until the reader is done.
    """
    sealed = [s for s in segments if s.sealed]
    total = sum(s.size_bytes for s in segments)
    hold = lowest_hold(holds)
    may_delete = max(0, len(sealed) - rules.min_segments)
    decisions: list[Decision] = []
    blocked: str | None = None
    for index, segment in enumerate(segments):
        if not segment.sealed:
            decisions.append(Decision(segment=segment, delete=False, kept_by="active segment"))
            blocked = blocked or "active segment"
            continue
        over_bytes = rules.max_bytes is not None and total > rules.max_bytes
        rule = _rule(segment, rules, now_us=now_us, over_bytes=over_bytes)
        if rule is None:
            decisions.append(Decision(segment=segment, delete=False))
            blocked = blocked or f"older segment {segment.first_lsn}..{segment.last_lsn} stays"
            continue
        kept_by = blocked
        if kept_by is None and hold is not None and segment.last_lsn >= hold[1]:
            kept_by = f"hold {hold[0]!r} at LSN {hold[1]}"
        if kept_by is None and index >= may_delete:
            kept_by = f"min_segments={rules.min_segments}"
        if kept_by is not None:
            blocked = blocked or kept_by
            decisions.append(Decision(segment=segment, delete=False, rule=rule, kept_by=kept_by))
            continue
        total -= segment.size_bytes
        decisions.append(Decision(segment=segment, delete=True, rule=rule))
    return decisions


def _rule(segment: SegmentInfo, rules: Rules, *, now_us: int, over_bytes: bool) -> str | None:
    if rules.before_lsn is not None and segment.last_lsn < rules.before_lsn:
        return "truncate_before"
    if rules.prune_through_us is not None and segment.max_timestamp_us <= rules.prune_through_us:
        return "prune_through"
    if rules.max_age_us is not None and segment.max_timestamp_us < now_us - rules.max_age_us:
        return "max_age"
    if over_bytes:
        return "max_bytes"
    return None
