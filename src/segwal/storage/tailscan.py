"""The frame-by-frame scan of a segment (the active one at open, any one for verify and
repair), and the search after damage for a frame that proves the damage was durable.

Recovery (``recovery.py``) decides what to keep from what these find; the rule they serve:
damage at LSN E in the last segment is a torn tail only when no valid frame after it was
written once E was durable (each frame records the log's durable LSN when it was written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from segwal.format.features import HEADER_PREALLOCATED, zero_tail
from segwal.format.framing import max_frame_bytes
from segwal.format.layout import HEADER_SIZE, SEAL_SIZE, Seal, SegmentHeader
from segwal.format.scanner import Status, check, find_valid
from segwal.storage.fileio import FileHandle
from segwal.storage.framereads import READ_CHUNK, iter_frames
from segwal.storage.index import SparseIndex
from segwal.storage.segment import digest_of


class Resumable(Protocol):
    """Where an earlier scan of the same segment ended (recovery's ``SegmentState``)."""

    end: int
    last_lsn: int
    min_ts: int
    max_ts: int
    index: SparseIndex | None


# The search after damage reads the file in windows of this size.
SEARCH_WINDOW = 4 << 20


@dataclass(slots=True)
class TailScan:
    end: int
    last_lsn: int
    min_ts: int
    max_ts: int
    seal: Seal | None = None
    damage_offset: int | None = None
    reason: str = ""
    index: SparseIndex = field(default_factory=SparseIndex)


def scan_tail(
    handle: FileHandle, header: SegmentHeader, size: int, resume: Resumable | None = None
) -> TailScan:
    """Walk every frame of a segment; keep the prefix of whole batches, note the first damage.

    With ``resume`` (the same segment as an earlier scan left it) the walk starts where that
    scan ended: a readonly reader following a live log rescans only what is new.
    """
    first = header.first_lsn
    scan = TailScan(HEADER_SIZE, first - 1, 0, 0)
    start = HEADER_SIZE
    if resume is not None and resume.index is not None:
        scan = TailScan(resume.end, resume.last_lsn, resume.min_ts, resume.max_ts)
        scan.index = resume.index
        start = resume.end
    expected = scan.last_lsn + 1
    padded = bool(header.flags & HEADER_PREALLOCATED)
    batch_ts = 0
    batch_start = True
    # The scan reads every byte to the end, so it starts with full windows: growing from a
    # small first read costs a read of each frame twice (cold, a device round trip each).
    frames = iter_frames(handle, header, start, size, first_chunk=READ_CHUNK)
    while True:  # iter_frames always ends with a verdict that is not a frame: every exit breaks
        ref = next(frames)
        verdict = ref.verdict
        frame = verdict.frame
        if frame is not None:
            if frame.first_lsn != expected:
                scan.damage_offset = ref.offset
                scan.reason = f"frame holds LSN {frame.first_lsn}, expected {expected}"
                break
            if frame.durable_lsn >= frame.first_lsn:
                scan.damage_offset = ref.offset
                scan.reason = f"frame claims durable LSN {frame.durable_lsn} ahead of itself"
                break
            if batch_start:
                scan.index.add(frame.first_lsn, ref.offset, frame.timestamp_us)
            batch_start = frame.commit
            expected += frame.count
            batch_ts = frame.timestamp_us
            if frame.commit:
                if scan.last_lsn < first:
                    scan.min_ts = batch_ts
                scan.end = ref.offset + frame.length
                scan.last_lsn = expected - 1
                scan.max_ts = batch_ts
            continue
        if (
            padded
            and verdict.status in (Status.BAD, Status.SHORT)
            and zeros_to_end(handle, ref.offset, size)
        ):
            verdict = verdict._replace(status=Status.END)  # the preallocated, unused tail
        if verdict.status is Status.END:
            if ref.offset != scan.end:
                scan.damage_offset = scan.end
                scan.reason = "last batch has no commit marker"
            break
        if verdict.status is Status.SEAL and verdict.seal is not None:
            seal = verdict.seal
            problem = _seal_problem(seal, scan, ref.offset, size, handle, first, padded=padded)
            if problem is None:
                scan.seal = seal
                break
            scan.damage_offset = ref.offset
            scan.reason = problem
            break
        scan.damage_offset = ref.offset
        scan.reason = verdict.reason
        break
    scan.index.trim(scan.end)  # entries of a batch that was never committed go with the cut
    return scan


def zeros_to_end(handle: FileHandle, offset: int, size: int) -> bool:
    """Whether every byte of the file from ``offset`` to ``size`` is zero: where the data
    of a preallocated segment ends (docs/FORMAT.md, "Preallocated tail")."""
    while offset < size:
        window = handle.pread(min(size - offset, SEARCH_WINDOW), offset)
        if not window or not zero_tail(window):
            return not window  # the file shrank under us: nothing more to look at
        offset += len(window)
    return True


def _seal_problem(
    seal: Seal,
    scan: TailScan,
    offset: int,
    size: int,
    handle: FileHandle,
    first: int,
    *,
    padded: bool = False,
) -> str | None:
    if offset != scan.end:
        return "seal follows a batch without a commit marker"
    # A preallocated segment sealed by a writer that died before its seal barrier may still
    # hold its zeros after the seal: sealed all the same (the writer's open trims them).
    extra = padded and zeros_to_end(handle, offset + SEAL_SIZE, size)
    if offset + SEAL_SIZE != size and not extra:
        return f"{size - offset - SEAL_SIZE} bytes follow the seal"
    if seal.data_end != offset or seal.last_lsn != scan.last_lsn or seal.first_lsn != first:
        return f"seal says LSNs {seal.first_lsn}..{seal.last_lsn} end at {seal.data_end}"
    if seal.digest != digest_of(handle, offset):
        return "seal digest does not match the segment"
    return None


def written_after_durable(
    handle: FileHandle, header: SegmentHeader, damage: int, size: int, lsn: int
) -> bool:
    """Whether any valid frame after ``damage`` was written once ``lsn`` was durable.

    Such a frame proves the damaged bytes had passed a barrier, so losing them is corruption,
    not a crash. The search reads bounded windows and checks only plausible frame starts.
    """
    max_frame = max_frame_bytes(header.max_record_bytes, header.flags)
    seed, flags = header.seed, header.flags
    start = damage + 1
    while start < size:
        # Each byte is read about once: a candidate frame that runs past the window is
        # fetched on its own, and only if it could fit in the file.
        buf = handle.pread(min(size - start, SEARCH_WINDOW + SEAL_SIZE), start)
        window = min(len(buf), SEARCH_WINDOW)
        pos = 0
        while True:
            verdict = find_valid(
                buf, pos, window, len(buf), seed, max_frame, include_short=True, features=flags
            )
            if verdict is None:
                break
            at = verdict.offset
            if verdict.status is Status.SHORT:
                whole = b""
                if start + at + verdict.needed <= size:
                    whole = handle.pread(verdict.needed, start + at)
                verdict = check(whole, 0, len(whole), seed, max_frame, flags)
                if verdict.status not in (Status.FRAME, Status.SEAL):
                    pos = at + 1
                    continue
            if verdict.frame is not None:
                if verdict.frame.durable_lsn >= lsn:
                    return True
                pos = at + verdict.frame.length
            else:
                # A valid seal proves nothing: it may have been written before its barrier.
                pos = at + SEAL_SIZE
        start += max(window, pos)
    return False
