"""Recovery planning: list the directory, check every segment, scan the tail, decide.

The planner reads and never changes anything: it returns a :class:`Plan` (what to keep,
what to cut or move aside) that the log carries out in the order ``docs/DURABILITY.md``
gives. Sealed segments are checked by header, seal and chain alone, so open time does not
grow with the number of records; only the last (active) segment is scanned frame by frame,
and not even that when a clean close left it (``trust_close``, see ``closed_tail``).

A torn tail is not corruption, and corruption is not a torn tail: damage at LSN E in the
last segment is a torn tail only when no valid frame after it was written once E was
durable (each frame records the log's durable LSN at the time it was written).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from segwal.errors import (
    ContinuityError,
    CorruptionError,
    SealError,
    SegmentHeaderError,
)
from segwal.format.features import HEADER_PREALLOCATED
from segwal.format.layout import (
    HEADER_SIZE,
    ZERO_DIGEST,
    Seal,
    SegmentHeader,
)
from segwal.format.meta import Meta
from segwal.format.naming import Kind, Name, parse
from segwal.storage.fileio import FileHandle, FileSystem
from segwal.storage.index import SparseIndex, load_tail
from segwal.storage.meta import load as load_meta
from segwal.storage.segment import read_header, read_seal
from segwal.storage.tailscan import TailScan, scan_tail, written_after_durable


@dataclass(slots=True, kw_only=True)
class SegmentState:
    """A segment recovery keeps, as far as its checked prefix reaches."""

    path: str
    header: SegmentHeader
    size: int  # bytes in the file now
    end: int  # end of the kept data: the seal's offset, or the end of the last whole batch
    last_lsn: int
    min_ts: int
    max_ts: int
    seal: Seal | None = None
    index: SparseIndex | None = None  # loaded or built on first use for sealed segments

    @property
    def sealed(self) -> bool:
        return self.seal is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Damage:
    """The first damage recovery found, and whether a crash alone could explain it."""

    index: int  # position of the damaged segment in the sorted segment list
    path: str
    offset: int
    lsn: int
    reason: str
    torn: bool  # damage a crash can leave: at the end of the last segment, nothing after
    keep_prefix: bool  # the segment's header is sound, so its valid prefix can be kept
    error: type[CorruptionError] = CorruptionError

    def exception(self) -> CorruptionError:
        reason = f"torn tail: {self.reason}" if self.torn else self.reason
        return self.error(reason, path=self.path, offset=self.offset, lsn=self.lsn)


@dataclass(slots=True, kw_only=True)
class Plan:
    """What recovery found and what must happen before the log is usable."""

    directory: str
    meta: Meta = field(default_factory=Meta)
    has_meta: bool = False
    segments: list[SegmentState] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)  # below the checkpoint or past a rewind
    damage: Damage | None = None
    quarantine: list[str] = field(default_factory=list)  # whole segments to move aside
    temp_files: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def log_id(self) -> bytes | None:
        return self.segments[0].header.log_id if self.segments else None


def scanned_state(
    path: str, header: SegmentHeader, size: int, scan: TailScan, *, sealed: bool = True
) -> SegmentState:
    """The segment as a frame-by-frame scan left it (its seal only if ``sealed``)."""
    return SegmentState(
        path=path,
        header=header,
        size=size,
        end=scan.end,
        last_lsn=scan.last_lsn,
        min_ts=scan.min_ts,
        max_ts=scan.max_ts,
        seal=scan.seal if sealed else None,
        index=scan.index,
    )


def plan(
    fs: FileSystem,
    directory: str,
    known: dict[str, SegmentState] | None = None,
    *,
    trust_close: bool = False,
) -> Plan:
    """Check the log in ``directory`` and say what to keep; raise on what is never valid.

    ``known`` holds segments an earlier plan of this directory checked (a readonly view
    looking again): a sealed one of the same size is taken as checked, since sealed
    segments never change, and the unsealed tail is scanned from where it was left.
    ``trust_close`` (the writer's open, which holds the lock): take the active segment as
    the clean close in META describes it when that still fits (``closed_tail``), unscanned.
    """
    known = known or {}
    base = directory if directory.endswith("/") else directory + "/"  # join, cheaply
    # The listing comes before META: a writer makes a new checkpoint durable in META before
    # it deletes segments, so a listing older than the META it is read with holds only
    # extra segments below the checkpoint (dropped as obsolete), never a gap.
    entries = sorted(fs.list_dir(directory), key=lambda e: e.name)
    stored = load_meta(fs, directory)
    result = Plan(directory=directory, meta=stored or Meta(), has_meta=stored is not None)
    names = []
    indexes: list[Name] = []
    for entry in entries:
        name = parse(entry.name)
        if name.kind is Kind.SEGMENT:
            if not entry.is_file:
                path = base + entry.name
                raise SegmentHeaderError("not a regular file", path=path, offset=0)
            names.append(name)
        elif name.kind is Kind.TEMP and entry.is_file:
            # Leftovers of a segment creation, a META or a cursor commit cut short.
            result.temp_files.append(base + entry.name)
        elif name.kind is Kind.INDEX:
            indexes.append(name)
        elif name.kind is Kind.FOREIGN or name.kind is Kind.TEMP:
            result.foreign.append(base + entry.name)  # a temp name that is not a file
        elif name.kind is Kind.ARCHIVE and not entry.is_file:
            result.foreign.append(base + entry.name)  # the archive's names are files
    names.sort(key=lambda n: n.first_lsn)
    present = {n.first_lsn for n in names}
    # An index whose segment is gone is a leftover of a deletion that a crash interrupted.
    result.temp_files.extend(base + n.name for n in indexes if n.first_lsn not in present)
    names = _drop_obsolete(result, names)
    for index, name in enumerate(names):
        path = base + name.name
        last = index == len(names) - 1
        handle = fs.open_read(path)
        try:
            damage = _check_segment(
                result,
                handle,
                index,
                name.first_lsn,
                last,
                known.get(path),
                fs if trust_close else None,
            )
        finally:
            handle.close()
        if damage is not None:
            result.damage = damage
            result.quarantine = [base + n.name for n in names[index + 1 :]]
            break
    if result.has_meta and result.segments:
        first = result.segments[0]
        checkpoint = result.meta.first_lsn
        end = result.segments[-1].last_lsn
        if checkpoint > end + 1:
            raise ContinuityError(
                f"the log's checkpoint keeps LSN {checkpoint} and later, but its records end "
                f"at LSN {end}",
                path=posixpath.join(directory, "META"),
                offset=0,
                lsn=checkpoint,
            )
        if first.header.first_lsn > checkpoint:
            raise ContinuityError(
                f"the log's first segment starts at LSN {first.header.first_lsn} but its "
                f"checkpoint keeps LSN {checkpoint} and later",
                path=first.path,
                offset=0,
                lsn=checkpoint,
            )
    return result


def _drop_obsolete(result: Plan, names: list[Name]) -> list[Name]:
    """Set aside segments wholly below the checkpoint or past an unfinished rewind.

    Deletions of old segments are made durable by one directory fsync after all of them, so
    a crash can leave any subset: whatever lies wholly below the persisted first LSN is
    leftover, not a gap.
    """
    meta = result.meta
    keep = []
    for index, name in enumerate(names):
        path = posixpath.join(result.directory, name.name)
        later = names[index + 1].first_lsn if index + 1 < len(names) else None
        past_rewind = meta.truncate_after is not None and name.first_lsn > meta.truncate_after
        below = result.has_meta and later is not None and later <= meta.first_lsn
        if past_rewind or below:
            result.obsolete.append(path)
        else:
            keep.append(name)
    return keep


def _check_segment(
    result: Plan,
    handle: FileHandle,
    index: int,
    name_lsn: int,
    last: bool,
    cached: SegmentState | None = None,
    trusting: FileSystem | None = None,
) -> Damage | None:
    path = handle.path
    size = handle.size()
    if cached is not None and cached.seal is not None and cached.size == size:
        prev = result.segments[-1] if result.segments else None
        if prev is None or continuity_problem(prev, cached.header) is None:
            result.segments.append(cached)
            return None
    if last and cached is not None and cached.seal is None and size >= cached.end:
        scan = scan_tail(handle, cached.header, size, resume=cached)
        prev = result.segments[-1] if result.segments else None
        if (
            scan.damage_offset is None
            and scan.seal is None
            and (prev is None or continuity_problem(prev, cached.header) is None)
        ):
            result.segments.append(scanned_state(path, cached.header, size, scan))
            return None
        # Anything but a clean continuation (damage, a seal, a rewound file): look again
        # from the start, as a first open would.

    def damage(
        offset: int, lsn: int, reason: str, error: type[CorruptionError], **kw: bool
    ) -> Damage:
        return Damage(
            index=index,
            path=path,
            offset=offset,
            lsn=lsn,
            reason=reason,
            torn=kw.get("torn", False),
            keep_prefix=kw.get("keep_prefix", False),
            error=error,
        )

    if size < HEADER_SIZE:
        return damage(
            0, name_lsn, f"segment of {size} bytes is shorter than its header", SegmentHeaderError
        )
    try:
        header = read_header(handle)
    except SegmentHeaderError as exc:
        return damage(0, name_lsn, exc.reason, SegmentHeaderError)
    if header.first_lsn != name_lsn:
        return damage(
            0,
            name_lsn,
            f"header says first LSN {header.first_lsn}, name says {name_lsn}",
            SegmentHeaderError,
        )
    if index == 0 and not result.has_meta:
        # Only a checkpoint, stored in META before any segment goes, moves the start: a log
        # without one starts at its first segment ever. In every mode: "truncate" cannot
        # bring missing segments back. (A damaged header comes first, reported as such.)
        missing = first_segment_problem(header)
        if missing is not None:
            raise ContinuityError(missing, path=path, offset=0, lsn=1)
    if result.segments:
        prev = result.segments[-1]
        problem = continuity_problem(prev, header)
        if problem is not None:
            return damage(0, prev.last_lsn + 1, problem, ContinuityError)
    if not last:
        try:
            seal = read_seal(handle, header, size)
        except SealError as exc:
            return damage(
                exc.offset or 0, header.first_lsn, exc.reason, SealError, keep_prefix=True
            )
        result.segments.append(
            SegmentState(
                path=path,
                header=header,
                size=size,
                end=seal.data_end,
                last_lsn=seal.last_lsn,
                min_ts=seal.min_ts,
                max_ts=seal.max_ts,
                seal=seal,
            )
        )
        return None
    if trusting is not None:
        trusted = closed_tail(trusting, result.meta, path, header, size)
        if trusted is not None:
            result.segments.append(trusted)
            return None
    scan = scan_tail(handle, header, size)
    state = scanned_state(path, header, size, scan)
    result.segments.append(state)
    closed = result.meta.closed
    if closed is not None and posixpath.basename(path) != closed.segment:
        closed = None  # the clean close named a segment that is no longer the tail
    if scan.damage_offset is None:
        if closed is None or state.end >= closed.end:
            return None
        # Nothing torn, but less than a clean close left durable: bytes went missing.
        return damage(
            state.end,
            scan.last_lsn + 1,
            f"the segment's records end at offset {state.end}, but a clean close left it "
            f"durable up to offset {closed.end} (LSN {closed.lsn}, in META)",
            CorruptionError,
            keep_prefix=True,
        )
    torn = not written_after_durable(handle, header, scan.damage_offset, size, scan.last_lsn + 1)
    if not torn:
        scan.reason += f"; a later frame was written after LSN {scan.last_lsn + 1} was durable"
    elif closed is not None and scan.damage_offset < closed.end:
        # A clean close made these bytes durable: damage here is bit rot, never a torn write.
        torn = False
        scan.reason += (
            f"; a clean close left the segment durable up to offset {closed.end} "
            f"(LSN {closed.lsn}, in META)"
        )
    return damage(
        scan.damage_offset,
        scan.last_lsn + 1,
        scan.reason,
        CorruptionError,
        torn=torn,
        keep_prefix=True,
    )


def closed_tail(
    fs: FileSystem, meta: Meta, path: str, header: SegmentHeader, size: int
) -> SegmentState | None:
    """The last segment as the clean close in ``meta`` left it, if that still describes it.

    It does when META's mark names this segment, the file ends exactly where the mark says
    (appends only grow it; a rewind clears the mark in META before it rewrites the file; a
    preallocated segment's size is not its data end, so it is always scanned), and the
    index sidecar carries this close's token, end and last LSN. Frames are then checked
    when they are read, not here: damage before the mark is still named by the read, by
    ``verify``, and never cut (docs/DURABILITY.md, "Clean close").
    """
    closed, tail = meta.closed, meta.tail
    if closed is None or tail is None or posixpath.basename(path) != closed.segment:
        return None
    if size != closed.end or header.flags & HEADER_PREALLOCATED:
        return None
    if closed.lsn < header.first_lsn - 1 or (closed.lsn < header.first_lsn) != (
        closed.end == HEADER_SIZE
    ):
        return None
    index = load_tail(fs, path, tail.token, closed.end, header.first_lsn, closed.lsn)
    if index is None:
        return None
    return SegmentState(
        path=path,
        header=header,
        size=size,
        end=closed.end,
        last_lsn=closed.lsn,
        min_ts=tail.min_ts,
        max_ts=tail.max_ts,
        index=index,
    )


def first_segment_problem(header: SegmentHeader) -> str | None:
    """Why a segment cannot be the first a log without META ever had, if it cannot: that
    one starts at LSN 1 with sequence 0 and a zero previous digest."""
    if header.first_lsn != 1:
        return (
            f"the log has no META, so it was never truncated and must start at LSN 1, but its "
            f"first segment starts at LSN {header.first_lsn}: segments are missing"
        )
    if header.sequence != 0:
        return (
            f"the log has no META, but its first segment has sequence {header.sequence}, "
            "not 0: earlier segments are missing"
        )
    if header.prev_digest != ZERO_DIGEST:
        return (
            "the log has no META, but its first segment names a previous segment "
            "(non-zero previous digest): earlier segments are missing"
        )
    return None


def continuity_problem(prev: SegmentState, header: SegmentHeader) -> str | None:
    """Why a segment with ``header`` cannot follow the sealed segment ``prev``, if it cannot."""
    assert prev.seal is not None
    if header.log_id != prev.header.log_id:
        return "segment belongs to another log"
    if header.sequence != prev.header.sequence + 1:
        return f"segment sequence {header.sequence} does not follow {prev.header.sequence}"
    if header.first_lsn != prev.last_lsn + 1:
        kind = "gap" if header.first_lsn > prev.last_lsn + 1 else "overlap"
        return f"LSN {kind}: previous segment ends at LSN {prev.last_lsn}"
    if header.prev_digest != prev.seal.digest:
        return "broken digest chain: previous digest does not match the previous seal"
    return None
