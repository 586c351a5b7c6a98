"""Reading one segment's frames: streams checked frames up to a bound, and point reads.

The reader checks each frame (CRC, continuity, authentication) and never crosses into another
segment; headers and seals are read by segment.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from segwal.errors import (
    AuthenticationError,
    ChecksumError,
    CorruptionError,
)
from segwal.format.features import frame_length
from segwal.format.framing import max_frame_bytes
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    KIND_RECORDS,
    FormatError,
    SegmentHeader,
)
from segwal.format.records import decode_records, length_total, stream_records
from segwal.format.scanner import Status, Verdict, check, crc_ok
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import Buffer, FileHandle
from segwal.types import Record

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

READ_CHUNK = 1 << 20
FIRST_CHUNK = 16 << 10
BAD_CRC = Verdict(Status.BAD, reason="frame checksum mismatch")  # check()'s verdict on one


class FrameRef(NamedTuple):
    """A checked frame and the buffer it lies in (``verdict.frame.offset`` is into ``buf``)."""

    buf: bytes
    base: int  # file offset of buf[0]
    offset: int  # file offset the verdict is about
    verdict: Verdict
    lsn: int = 0  # after a seek by frame heads: the LSN those heads led to here


def iter_frames(
    handle: FileHandle,
    header: SegmentHeader,
    start: int,
    end: int,
    *,
    skip: tuple[int, int] | None = None,
    defer_crc: bool = False,
    first_chunk: int = FIRST_CHUNK,
) -> Iterator[FrameRef]:
    """Yield each verdict from ``start`` to ``end``, reading a bounded window at a time.

    Stops after the first verdict that is not a records frame (a seal, damage, a frame cut
    short at ``end``, or the end itself); the caller decides what that means. With
    ``skip=(first_lsn, lsn)`` frames holding only LSNs below ``lsn`` are passed over by
    their heads alone (no checksum): a seek, so a point read does not check a whole interval;
    the first frame yielded is still checked in full, and its LSN is the one the heads led to.
    ``defer_crc``: the caller authenticates every encrypted frame (``scanner.check``).
    ``first_chunk`` is the size of the first read (a point read that knows where the next
    indexed frame starts reads up to it, in one ``pread``).
    """
    max_frame = max_frame_bytes(header.max_record_bytes, header.flags)
    seed = header.seed
    pos = start
    buf = b""
    base = start
    chunk = max(1, min(first_chunk, READ_CHUNK))  # the caller may know the frame's size
    expected, skip_before = skip if skip is not None else (0, 0)
    while True:
        rel = pos - base
        if skip_before and rel + FRAME_HEAD_SIZE <= len(buf) and buf[rel + 4] == KIND_RECORDS:
            head = FRAME_HEAD.unpack_from(buf, rel)
            count, first = head[4], head[6]
            length = frame_length(head[2], count, head[5])
            if (
                count
                and first == expected
                and first + count <= skip_before
                and length <= max_frame
                and pos + length <= end
            ):
                pos += length
                expected += count
                continue
            skip_before = 0
        verdict = check(buf, rel, len(buf), seed, max_frame, header.flags, defer_crc=defer_crc)
        if verdict.status is Status.FRAME:
            yield FrameRef(buf, base, pos, verdict, expected)
            assert verdict.frame is not None
            pos = base + verdict.frame.end
            continue
        if verdict.status in (Status.SHORT, Status.END) and base + len(buf) < end:
            want = max(chunk, verdict.needed)
            chunk = min(2 * chunk, READ_CHUNK)
            buf = handle.pread(min(want, end - pos), pos)
            base = pos
            if buf:
                continue
        yield FrameRef(buf, base, pos, verdict, expected)
        return


class FrameDecoder(Protocol[T_co]):
    """Builds what a stream yields for one checked frame: records ``skip..stop-1`` of the
    frame whose plain body is ``buf[table:end]`` (``stream_records``'s arguments)."""

    def __call__(
        self,
        buf: Buffer,
        table: int,
        count: int,
        end: int,
        first_lsn: int,
        record_type: int,
        timestamp_us: int,
        skip: int,
        stop: int,
        /,
    ) -> T_co: ...


def record_iterator(
    buf: Buffer,
    table: int,
    count: int,
    end: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    skip: int,
    stop: int,
) -> Iterator[Record]:
    """A frame's records, streamed from a ``bytes`` body; from any other buffer (a decrypted
    body in the opener's scratch buffer, which the next frame overwrites) every record is
    built before this returns, in pure Python too."""
    decode = stream_records if buf.__class__ is bytes else decode_records
    return iter(decode(buf, table, count, end, first_lsn, record_type, timestamp_us, skip, stop))


def iter_records(
    handle: FileHandle,
    header: SegmentHeader,
    *,
    start: int,
    end: int,
    first_lsn: int,
    from_lsn: int,
    to_lsn: int,
    coding: Coding = PLAIN,
) -> Iterator[Iterator[Record]]:
    """Stream the records with LSNs in ``[from_lsn, to_lsn]`` from frames in ``[start, end)``.

    Yields one iterator of records per frame, so a caller can flatten them with
    ``itertools.chain.from_iterable`` and no Python code runs per record: a frame's records
    are built by ``format.records.stream_records``, in C when the speed-up is built. Every
    frame is checked again as it is read: damage that happened after open is raised, never
    skipped. An encrypted frame is checked by its authentication tag instead of its CRC,
    when the key is at hand: the tag covers every byte the CRC does but the CRC field, and
    a frame that fails it is reported as a checksum mismatch when its CRC fails too.
    """
    return decode_frames(
        handle, header, record_iterator, start=start, end=end, first_lsn=first_lsn,
        from_lsn=from_lsn, to_lsn=to_lsn, coding=coding,
    )  # fmt: skip


def decode_frames(
    handle: FileHandle,
    header: SegmentHeader,
    decode: FrameDecoder[T],
    *,
    start: int,
    end: int,
    first_lsn: int,
    from_lsn: int,
    to_lsn: int,
    coding: Coding = PLAIN,
    first_chunk: int = FIRST_CHUNK,
) -> Iterator[T]:
    """``iter_records`` with what ``decode`` builds of each frame's records in range (one
    item per frame, whatever it is: an iterator of records, a frame of payloads).
    ``first_chunk`` is ``iter_frames``'s: a caller that will read to ``end`` passes
    ``READ_CHUNK``, so no small read is made only to learn the first frame's length."""
    expected = first_lsn
    seek = (first_lsn, from_lsn) if from_lsn > first_lsn else None
    # Records are copied out of each body before the next frame is opened, so encrypted
    # frames may all be decrypted into one buffer.
    opener = coding.opener(header, handle.path, reuse=True)
    defer = opener.defers_crc
    frames = iter_frames(
        handle, header, start, end, skip=seek, defer_crc=defer, first_chunk=first_chunk
    )
    for ref in frames:
        verdict = ref.verdict
        frame = verdict.frame
        if frame is None:
            if expected > to_lsn:
                return
            # The caller bounds to_lsn by what the segment says it holds (its seal).
            raise _unreadable(handle, ref, expected)
        before = expected
        lsn = frame.first_lsn
        if seek is not None and first_lsn <= lsn <= from_lsn:
            expected, seek = lsn, None  # the heads passed over led here; continuity holds
        if lsn != expected:
            _check_deferred(handle, header, ref, before)
            raise CorruptionError(
                f"frame holds LSN {lsn}", path=handle.path, offset=ref.offset, lsn=expected
            )
        count = frame.count
        expected = lsn + count
        skip = from_lsn - lsn if from_lsn > lsn else 0
        stop = min(count, to_lsn - lsn + 1)
        if expected <= from_lsn or stop <= skip:
            _check_deferred(handle, header, ref, before)  # passed over, never authenticated
            if expected <= from_lsn:
                continue
            return
        body: Buffer = ref.buf
        table, body_end = frame.offset + FRAME_HEAD_SIZE, frame.end
        if frame.opaque:  # version 2: decrypted and decompressed into a buffer of its own
            try:
                body, table, body_end = opener.body(body, frame, ref.offset)
            except AuthenticationError:
                _check_deferred(handle, header, ref, before)
                raise
        try:
            item = decode(
                body,
                table,
                count,
                body_end,
                lsn,
                frame.record_type,
                frame.timestamp_us,
                skip,
                stop,
            )
        except FormatError as exc:  # check() passed these lengths; a place, should it not
            raise CorruptionError(
                exc.reason, path=handle.path, offset=ref.offset, lsn=lsn + skip
            ) from None
        yield item
        if expected > to_lsn:
            return


@dataclass(frozen=True, slots=True)
class PlainFrame:
    """One checked frame's plain body, in a buffer of its own (no read window pinned)."""

    buf: Buffer
    table: int  # where the lengths table starts in ``buf``
    end: int  # where the payloads end in ``buf``
    first_lsn: int
    count: int
    record_type: int
    timestamp_us: int
    offset: int  # the file offset of the frame

    def record(self, lsn: int) -> Record:
        """The record ``lsn`` of this frame, decoded from memory (FormatError if the body
        disagrees with itself, which a frame that was checked when read cannot)."""
        skip = lsn - self.first_lsn
        records = stream_records(
            self.buf,
            self.table,
            self.count,
            self.end,
            self.first_lsn,
            self.record_type,
            self.timestamp_us,
            skip,
            skip + 1,
        )
        return next(iter(records))


def read_frame(
    handle: FileHandle,
    header: SegmentHeader,
    *,
    start: int,
    end: int,
    first_lsn: int,
    lsn: int,
    coding: Coding = PLAIN,
    first_chunk: int = FIRST_CHUNK,
) -> PlainFrame:
    """The checked frame holding ``lsn``, scanning from the frame at ``start`` (which holds
    ``first_lsn``): what ``iter_records`` would decode ``lsn`` from, with the same checks
    and errors, for a point read that keeps the frame."""
    expected = first_lsn
    seek = (first_lsn, lsn) if lsn > first_lsn else None
    opener = coding.opener(header, handle.path)  # no reuse: the body is kept
    defer = opener.defers_crc
    frames = iter_frames(
        handle, header, start, end, skip=seek, defer_crc=defer, first_chunk=first_chunk
    )
    for ref in frames:
        verdict = ref.verdict
        frame = verdict.frame
        if frame is None:
            raise _unreadable(handle, ref, expected)
        before = expected
        first = frame.first_lsn
        if seek is not None and first_lsn <= first <= lsn:
            expected, seek = first, None
        if first != expected:
            _check_deferred(handle, header, ref, before)
            raise CorruptionError(
                f"frame holds LSN {first}", path=handle.path, offset=ref.offset, lsn=expected
            )
        expected = first + frame.count
        if expected <= lsn:
            _check_deferred(handle, header, ref, before)  # passed over, never authenticated
            continue
        if frame.opaque:  # version 2: decrypted and decompressed into a buffer of its own
            try:
                body, table, body_end = opener.body(ref.buf, frame, ref.offset)
            except AuthenticationError:
                _check_deferred(handle, header, ref, before)
                raise
            if isinstance(body, memoryview):
                body = bytes(body)  # never a view that pins the read window
            # The scanner bounds the plain size only; the table must add up before the
            # frame is kept (a cached frame is never checked again).
            if length_total(body, table, frame.count) != body_end - table - 4 * frame.count:
                raise CorruptionError(
                    "record lengths disagree with the frame's plain size",
                    path=handle.path,
                    offset=ref.offset,
                    lsn=first,
                )
            return PlainFrame(
                body, table, body_end, first, frame.count, frame.record_type,
                frame.timestamp_us, ref.offset,
            )  # fmt: skip
        own = ref.buf[frame.offset : frame.end]  # a copy: the read window may be 1 MiB
        return PlainFrame(
            own, FRAME_HEAD_SIZE, frame.end - frame.offset, first, frame.count,
            frame.record_type, frame.timestamp_us, ref.offset,
        )  # fmt: skip
    raise AssertionError("iter_frames ends with a verdict that is not a frame")


def _check_deferred(
    handle: FileHandle, header: SegmentHeader, ref: FrameRef, expected: int
) -> None:
    """Raise what ``check`` would have said of a frame whose CRC it deferred, should that
    CRC not match: the error of a checksum mismatch, exactly as ``_unreadable`` gives it."""
    frame = ref.verdict.frame
    if frame is not None and not crc_ok(ref.buf, frame, header.seed):
        raise _unreadable(handle, ref._replace(verdict=BAD_CRC), expected)


def _unreadable(handle: FileHandle, ref: FrameRef, expected: int) -> CorruptionError:
    """The error for a frame that is not there (the segment ends) or does not check."""
    if ref.verdict.status is Status.END:
        return CorruptionError(
            f"segment ends before LSN {expected}",
            path=handle.path,
            offset=ref.offset,
            lsn=max(expected, ref.lsn),
        )
    return ChecksumError(
        ref.verdict.reason or "unexpected bytes",
        path=handle.path,
        offset=ref.offset,
        lsn=max(expected, ref.lsn),
    )
