"""The values segwal hands to its users: records, segment infos, reports and counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


class Record(NamedTuple):
    """One record of the log."""

    lsn: int
    type: int
    timestamp_us: int
    payload: bytes


class FrameRecords(NamedTuple):
    """The records of one stored frame, from ``Wal.replay_frames``: payload ``i`` is the
    record with LSN ``first_lsn + i``; the records of a frame share its type and timestamp
    (an ``append_batch`` gives them one)."""

    first_lsn: int
    type: int
    timestamp_us: int
    payloads: list[bytes]

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + len(self.payloads) - 1

    def records(self) -> list[Record]:
        """The frame's records as ``Record`` tuples (what ``replay`` yields for them)."""
        first, kind, stamp = self.first_lsn, self.type, self.timestamp_us
        return [Record(first + i, kind, stamp, p) for i, p in enumerate(self.payloads)]


@dataclass(frozen=True, slots=True)
class Batch:
    """One page of records from ``read_batch``: where to continue, and whether to."""

    records: list[Record]
    next_lsn: int  # pass it as from_lsn for the next page
    has_more: bool  # more records were visible when this page was read


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentInfo:
    """What the log knows about one segment without reading its records."""

    path: str
    sequence: int
    first_lsn: int
    last_lsn: int  # first_lsn - 1 when the segment holds no record
    size_bytes: int
    sealed: bool
    created_us: int
    min_timestamp_us: int = 0  # of sealed segments; 0 for the active one or an empty one
    max_timestamp_us: int = 0
    digest: str = ""  # BLAKE3 of a sealed segment, hex

    @property
    def record_count(self) -> int:
        return self.last_lsn - self.first_lsn + 1

    @property
    def created_at(self) -> datetime:
        return _utc(self.created_us)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cut:
    """Bytes that recovery removed from the end of a segment, and why."""

    path: str
    offset: int
    length: int
    lsn: int  # the LSN expected at ``offset``
    reason: str
    quarantine_path: str | None = None  # where the bytes were moved, in "truncate" mode


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryReport:
    """What opening the log found and did."""

    mode: str
    created: bool = False  # the directory held no log and a new one was started
    segments: int = 0
    first_lsn: int = 1
    last_lsn: int = 0
    cuts: tuple[Cut, ...] = ()
    quarantined: tuple[str, ...] = ()  # whole segments moved aside ("truncate" mode)
    removed_temp_files: tuple[str, ...] = ()
    removed_obsolete: tuple[str, ...] = ()  # segments left below the checkpoint by a crash
    rewound_to: int | None = None  # an interrupted truncate_after that recovery finished
    foreign_files: tuple[str, ...] = ()
    sealed_tail: bool = False  # the last segment was sealed; a new active one was started

    @property
    def torn_tail(self) -> bool:
        return bool(self.cuts)

    @property
    def clean(self) -> bool:
        return not (self.cuts or self.quarantined)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["torn_tail"] = self.torn_tail
        data["clean"] = self.clean
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One problem that verify found."""

    path: str
    offset: int | None
    lsn: int | None
    reason: str
    kind: str = "corruption"  # or "torn_tail": damage a crash can leave at the very end

    def __str__(self) -> str:
        where = f" at offset {self.offset}" if self.offset is not None else ""
        lsn = f" (LSN {self.lsn})" if self.lsn is not None else ""
        return f"{self.path}{where}{lsn}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentCheck:
    """Verify's verdict on one segment: clean, or the first bad offset."""

    path: str
    first_lsn: int
    last_lsn: int
    records: int
    sealed: bool
    ok: bool
    bad_offset: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """The result of :func:`segwal.verify`."""

    ok: bool
    problems: tuple[Problem, ...]
    segments: tuple[SegmentCheck, ...]
    records: int
    first_lsn: int
    last_lsn: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Counters since the log was opened, and the log as it is now.

    On a readonly open the counters (appends, records, payload, written bytes, fsyncs,
    directory fsyncs) are the writer's, as it last published them in ``LOCK`` (at each
    advance of its durable LSN, and at close); ``writes`` and the fsync histogram stay
    those of this process.
    """

    appends: int  # append and append_batch calls that succeeded
    records: int  # records appended
    payload_bytes: int  # payload bytes appended
    written_bytes: int  # bytes written to segments (frames, seals, headers)
    writes: int  # write calls on segments
    fsyncs: int  # data barriers (fdatasync) on segments
    dir_fsyncs: int  # directory barriers
    rotations: dict[str, int] = field(default_factory=dict)  # by reason: size, age, forced
    segments_created: int = 0
    # Gauges: the log as it is now (a readonly open sees what the writer made durable).
    durable_lsn: int = 0
    first_lsn: int = 1
    last_lsn: int = 0
    segments: int = 0  # segment files, the active one included
    log_bytes: int = 0  # bytes in those files
    # Counters since open.
    recovery_cuts: int = 0  # torn tails cut (or damage quarantined) by the recovery of this open
    corruption_errors: int = 0  # CorruptionErrors raised by reads
    retention_deletions: int = 0  # segments deleted by retention or truncate_before
    # The group commit's fdatasync durations (append.sync; seals and headers not included):
    # cumulative (upper bound in seconds, count) pairs, the last bound +Inf, and their sum.
    fsync_buckets: tuple[tuple[float, int], ...] = ()
    fsync_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """One log key of an encrypted log, as ``KEYS`` lists it (never the key itself)."""

    key_id: int
    cipher: str  # "aes-256-gcm" or "chacha20-poly1305"
    created_us: int
    current: bool  # new segments are encrypted with this key

    @property
    def created(self) -> datetime:
        return _utc(self.created_us)
