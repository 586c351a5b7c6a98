"""One segment file: the writer of the active segment, and the reader of any segment.

The writer owns the tail offset, writes one encoded buffer per call, syncs, and seals; it
never decides when to rotate and never assigns LSNs. The reader checks headers and seals and
streams checked frames up to a bound; it never crosses into another segment.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar, cast

import blake3

from segwal.errors import (
    AuthenticationError,
    ChecksumError,
    ContinuityError,
    CorruptionError,
    SealError,
    SegmentHeaderError,
    UnsupportedFormatError,
)
from segwal.format.features import HEADER_PREALLOCATED, frame_length
from segwal.format.frames import FrameEncoder
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    KIND_RECORDS,
    MAX_LSN,
    SEAL_SIZE,
    FormatError,
    Seal,
    SegmentHeader,
    decode_header,
    decode_seal,
    encode_header,
    encode_seal,
    max_frame_bytes,
)
from segwal.format.naming import segment_name, temp_name
from segwal.format.records import decode_records, length_total, stream_records
from segwal.format.scanner import Status, Verdict, check, crc_ok
from segwal.storage.blocks import DirectTail
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import Buffer, FileHandle, FileSystem
from segwal.storage.index import SparseIndex
from segwal.types import Record

log = logging.getLogger("segwal")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

READ_CHUNK = 1 << 20
FIRST_CHUNK = 16 << 10
DIGEST_CHUNK = 4 << 20  # a point read needs little; a stream doubles up to READ_CHUNK
BAD_CRC = Verdict(Status.BAD, reason="frame checksum mismatch")  # check()'s verdict on one


def header_error(exc: FormatError, path: str) -> Exception:
    """The public error for a header that did not decode."""
    if exc.newer:
        return UnsupportedFormatError(
            f"{path}: {exc.reason}", path=path, hint="upgrade segwal to read this log"
        )
    return SegmentHeaderError(exc.reason, path=path, offset=0)


def read_header(handle: FileHandle) -> SegmentHeader:
    """Read and check the header of an open segment."""
    try:
        return decode_header(handle.pread(HEADER_SIZE, 0))
    except FormatError as exc:
        raise header_error(exc, handle.path) from None


def read_seal(handle: FileHandle, header: SegmentHeader, size: int) -> Seal:
    """Read the seal that must end a sealed segment of ``size`` bytes."""
    path = handle.path
    if size < HEADER_SIZE + SEAL_SIZE:
        raise SealError("segment is too short to hold a seal", path=path, offset=size)
    offset = size - SEAL_SIZE
    try:
        seal = decode_seal(handle.pread(SEAL_SIZE, offset), header.seed)
    except FormatError as exc:
        raise SealError(exc.reason, path=path, offset=offset) from None
    if seal.data_end != offset or seal.first_lsn != header.first_lsn:
        raise SealError(
            f"seal disagrees with its segment (data end {seal.data_end}, first LSN "
            f"{seal.first_lsn})",
            path=path,
            offset=offset,
        )
    return seal


def undo(*steps: Callable[[], object]) -> None:
    """Run the steps of an undo after a failure, stopping quietly at the first that fails:
    the log has failed already, and the original error is the one to report."""
    for step in steps:
        try:
            step()
        except OSError as exc:
            log.warning("could not undo after a failed write or barrier: %s", exc)
            return


def digest_of(handle: FileHandle, end: int) -> bytes:
    """BLAKE3 of bytes ``[0, end)`` of a segment: what its seal records."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    for offset in range(0, end, DIGEST_CHUNK):
        hasher.update(handle.pread(min(DIGEST_CHUNK, end - offset), offset))
    return bytes(hasher.digest())


class SegmentWriter:
    """Appends encoded frames to the active segment and seals it."""

    def __init__(
        self,
        fs: FileSystem,
        handle: FileHandle,
        header: SegmentHeader,
        *,
        offset: int,
        last_lsn: int,
        min_ts: int,
        max_ts: int,
        index: SparseIndex | None = None,
        encoder: FrameEncoder | None = None,
        step: int = 0,
        direct: bool = False,
    ) -> None:
        self.fs = fs
        # direct_io: whole aligned blocks only, the partial last one rewritten from its
        # stored bytes (storage/blocks.py); only where the header allows zeros after the data.
        self.direct: DirectTail | None = None
        if direct and header.flags & HEADER_PREALLOCATED:
            self.direct = DirectTail(handle, offset)
        # A preallocated segment (header flag): bytes allocated so far, and the step to grow
        # by when a write would pass them (0: the file grows with each write).
        self.step = step if header.flags & HEADER_PREALLOCATED else 0
        self.allocated = handle.size() if header.flags & HEADER_PREALLOCATED else 0
        # Version 2 segments (compressed or encrypted frames); None: version 1 frames.
        self.encoder = encoder
        self.index = index if index is not None else SparseIndex()
        self.synced = offset  # bytes a completed barrier covers (the writer starts synced)
        self.handle = handle
        self.header = header
        self.path = handle.path
        self.offset = offset
        self.last_lsn = last_lsn
        self.min_ts = min_ts
        self.max_ts = max_ts

    @classmethod
    def create(
        cls,
        fs: FileSystem,
        directory: str,
        *,
        log_id: bytes,
        sequence: int,
        first_lsn: int,
        created_us: int,
        max_record_bytes: int,
        prev_digest: bytes,
        coding: Coding = PLAIN,
    ) -> SegmentWriter:
        """Create the next active segment: temp file, header, fdatasync, rename, dir fsync.

        Raises ContinuityError when ``first_lsn`` is past the last LSN a log can have.

        The rename publishes a file whose header is already durable, so a segment name never
        points at a file without a whole header, whatever instant the machine dies.
        """
        if not 1 <= first_lsn <= MAX_LSN:
            raise ContinuityError(
                f"cannot start a segment at LSN {first_lsn}: LSNs end at {MAX_LSN}",
                path=posixpath.join(directory, segment_name(first_lsn)),
                lsn=first_lsn,
            )
        compression_id, key = coding.new_segment(log_id, sequence, first_lsn)
        raw = encode_header(
            log_id=log_id,
            sequence=sequence,
            first_lsn=first_lsn,
            created_us=created_us,
            max_record_bytes=max_record_bytes,
            prev_digest=prev_digest,
            compression_id=compression_id,
            encryption_id=key.cipher_id if key is not None else 0,
            key_id=key.key_id if key is not None else 0,
            salt=key.salt if key is not None else bytes(16),
            dict_id=coding.dictionary_id,
            preallocated=coding.preallocate > 0 or coding.direct,
        )
        temp = posixpath.join(directory, temp_name(first_lsn))
        final = posixpath.join(directory, segment_name(first_lsn))
        handle = fs.create(temp)
        renamed = False
        try:
            if coding.direct:
                # Refused here (tmpfs: EINVAL), before anything is published.
                fs.open_direct(temp).close()
            handle.pwrite(raw, 0)
            if coding.preallocate:
                # Under the header's barrier: the segment is published with its space.
                handle.allocate(HEADER_SIZE, coding.preallocate)
            handle.sync("create.header")
            fs.rename(temp, final)
            renamed = True
            fs.sync_dir(directory, "create.rename")
        except BaseException:
            handle.close()
            if renamed:
                # The directory barrier failed: take the name back so that a restart in
                # this boot does not find (and trust) a segment the disk may not have.
                undo(lambda: fs.unlink(final), lambda: fs.sync_dir(directory, "fail.undo"))
            raise
        handle.close()
        # Reopen under the final name so error messages and stats name the real file.
        handle = fs.open_direct(final) if coding.direct else fs.open_write(final)
        header = decode_header(raw)
        return cls(
            fs,
            handle,
            header,
            offset=HEADER_SIZE,
            last_lsn=first_lsn - 1,
            min_ts=0,
            max_ts=0,
            encoder=coding.encoder(header, key, path=final),
            step=coding.preallocate,
            direct=coding.direct,
        )

    @property
    def first_lsn(self) -> int:
        return self.header.first_lsn

    @property
    def count(self) -> int:
        return self.last_lsn - self.header.first_lsn + 1

    def write(self, data: Buffer, last_lsn: int, timestamp_us: int) -> None:
        """Write encoded frames at the tail; the caller has made them whole batches."""
        if self.direct is not None:
            end = self.direct.end(self.offset, len(data))
            if self.step and end > self.allocated:
                self._grow(end)
            self.direct.put(data, self.offset)
        else:
            if self.step and self.offset + len(data) > self.allocated:
                self._grow(self.offset + len(data))
            self.handle.pwrite(data, self.offset)
        self.index.add(self.last_lsn + 1, self.offset, timestamp_us)
        self.offset += len(data)
        if self.last_lsn < self.header.first_lsn:
            self.min_ts = timestamp_us
        self.last_lsn = last_lsn
        self.max_ts = timestamp_us

    def _grow(self, end: int) -> None:
        """Allocate the next step (at least to ``end``): the one write in a step's worth
        whose fdatasync also journals a size change."""
        new = max(end, self.allocated + self.step)
        self.handle.allocate(self.allocated, new - self.allocated)
        self.allocated = new

    def sync(self) -> None:
        """fdatasync the segment: every frame written so far becomes durable."""
        end = self.offset
        self.handle.sync("append.sync")
        self.synced = max(self.synced, end)

    def discard_unsynced(self) -> None:
        """After a failed write or barrier: cut what no barrier covered, best effort.

        Linux may drop the failed pages' dirty state and report success later, so those
        bytes must not stay readable: a restart in the same boot would take the page cache
        for the disk and acknowledge records after bytes the disk never got.
        """
        self.allocated = min(self.allocated, self.synced)
        undo(lambda: self.handle.truncate(self.synced), lambda: self.handle.sync("fail.undo"))

    def seal(self, sealed_us: int) -> Seal:
        """Write the seal and make it durable; the segment never changes again."""
        # Hashed here, not on every write: appends stay light, and large reads let BLAKE3
        # use every core.
        digest = digest_of(self.handle, self.offset)
        raw = encode_seal(
            seed=self.header.seed,
            first_lsn=self.header.first_lsn,
            last_lsn=self.last_lsn,
            count=self.count,
            min_ts=self.min_ts,
            max_ts=self.max_ts,
            data_end=self.offset,
            sealed_us=sealed_us,
            digest=digest,
        )
        if self.direct is not None:
            self.direct.put(raw, self.offset)  # the seal's block, zero-padded: trimmed below
        else:
            self.handle.pwrite(raw, self.offset)
        if self.direct is not None or self.allocated > self.offset + SEAL_SIZE:
            # A sealed segment ends with its seal: the unused zeros go, under the same
            # barrier (a crash before it leaves the seal followed by zeros, which recovery
            # accepts as the last segment and trims: docs/DURABILITY.md, "Preallocation").
            self.handle.truncate(self.offset + SEAL_SIZE)
        # One barrier covers the unsynced frames and the seal: the next segment may only
        # exist once everything before it, seal included, is durable.
        self.handle.sync("seal.sync")
        seal = decode_seal(raw, self.header.seed)
        self.offset += SEAL_SIZE
        self.synced = self.allocated = self.offset
        return seal

    def close(self) -> None:
        self.handle.close()
        if self.direct is not None:
            self.direct.close()


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
    return iter(
        stream_records(buf, table, count, end, first_lsn, record_type, timestamp_us, skip, stop)
    )


def eager_record_iterator(
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
    """``record_iterator`` with every record built before it returns (a list's iterator)."""
    return iter(
        decode_records(buf, table, count, end, first_lsn, record_type, timestamp_us, skip, stop)
    )


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
) -> Iterator[T]:
    """``iter_records`` with what ``decode`` builds of each frame's records in range (one
    item per frame, whatever it is: an iterator of records, a frame of payloads)."""
    expected = first_lsn
    seek = (first_lsn, from_lsn) if from_lsn > first_lsn else None
    # Records are copied out of each body before the next frame is opened, so encrypted
    # frames may all be decrypted into one buffer.
    opener = coding.opener(header, handle.path, reuse=True)
    defer = opener.defers_crc
    # Eager (a list) even in pure Python: an opaque body may be the opener's buffer, which
    # the next frame overwrites (payload decoders copy every payload anyway).
    decode_opaque = decode
    if decode is record_iterator:
        decode_opaque = cast(FrameDecoder[T], eager_record_iterator)
    for ref in iter_frames(handle, header, start, end, skip=seek, defer_crc=defer):
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
            item = (decode_opaque if frame.opaque else decode)(
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
