"""Rewriting a segment to keep only its records up to an LSN (``truncate_after``).

The surviving prefix is written aside to a temp file, made durable, and renamed over the
segment, so a crash leaves the old segment or the new one, never a mix. A batch that
straddles the cut is re-encoded with its surviving records (same LSNs, type, timestamp).
"""

from __future__ import annotations

import errno
import posixpath

from segwal.errors import ChecksumError, StorageError
from segwal.format.frames import FrameEncoder
from segwal.format.framing import encode_frames
from segwal.format.layout import HEADER_SIZE, SegmentHeader
from segwal.format.naming import temp_name
from segwal.format.records import record_spans
from segwal.format.scanner import Status
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import FileSystem
from segwal.storage.framereads import FrameRef, iter_frames
from segwal.storage.index import remove as remove_index
from segwal.storage.recovery import SegmentState


def rewrite_prefix(
    fs: FileSystem, directory: str, state: SegmentState, lsn: int, coding: Coding = PLAIN
) -> SegmentState:
    """Replace ``state``'s file by an unsealed copy holding only its records up to ``lsn``.

    The copy keeps the header (and so the salt): whole frames are copied as they are, and
    a straddling batch is re-encoded by the segment's encoder, whose key has a freshly
    drawn nonce prefix. The caller has checked the codec and key are at hand.
    """
    header = state.header
    encoder = coding.encoder(header, path=state.path)
    first = header.first_lsn
    temp = posixpath.join(directory, temp_name(first))
    try:
        fs.unlink(temp)
    except StorageError as exc:
        if exc.errno != errno.ENOENT:
            raise
    source = fs.open_read(state.path)
    target = fs.create(temp)
    min_ts = max_ts = 0
    try:
        raw = source.pread(HEADER_SIZE, 0)
        target.pwrite(raw, 0)
        offset = HEADER_SIZE
        last = first - 1
        if lsn >= first:
            for ref in iter_frames(source, header, HEADER_SIZE, state.end):
                frame = ref.verdict.frame
                if frame is None:
                    if ref.verdict.status is Status.END:
                        break
                    raise ChecksumError(
                        ref.verdict.reason, path=state.path, offset=ref.offset, lsn=last + 1
                    )
                if frame.last_lsn <= lsn:
                    data: bytes | bytearray = ref.buf[frame.offset : frame.end]
                    if not frame.commit and frame.last_lsn == lsn:
                        data = _reencode(ref, lsn, header, coding, encoder, state.path)
                else:
                    data = _reencode(ref, lsn, header, coding, encoder, state.path)
                target.pwrite(data, offset)
                offset += len(data)
                if last < first:
                    min_ts = frame.timestamp_us
                max_ts = frame.timestamp_us
                last = min(frame.last_lsn, lsn)
                if last >= lsn:
                    break
        # The prefix must be durable before its name replaces the old segment.
        target.sync("truncate.sync")
    finally:
        source.close()
        target.close()
    remove_index(fs, state.path)  # the segment is no longer the one its sidecar indexes
    fs.rename(temp, state.path)
    # The replacement must survive before anything is appended after the cut.
    fs.sync_dir(directory, "truncate.rename")
    return SegmentState(
        path=state.path,
        header=header,
        size=offset,
        end=offset,
        last_lsn=last,
        min_ts=min_ts,
        max_ts=max_ts,
    )


def _reencode(
    ref: FrameRef,
    lsn: int,
    header: SegmentHeader,
    coding: Coding,
    encoder: FrameEncoder | None,
    path: str,
) -> bytearray:
    """The frame's records up to ``lsn`` as one committed frame."""
    frame = ref.verdict.frame
    assert frame is not None
    keep = lsn - frame.first_lsn + 1
    buf, table, end = coding.plain_body(ref.buf, frame, header, path, ref.offset)
    spans = record_spans(buf, table, frame.count, end)[:keep]
    payloads = [bytes(buf[start:end]) for start, end in spans]
    lengths = [end - start for start, end in spans]
    if encoder is not None:
        return encoder.encode(
            first_lsn=frame.first_lsn,
            record_type=frame.record_type,
            timestamp_us=frame.timestamp_us,
            durable_lsn=min(frame.durable_lsn, frame.first_lsn - 1),
            payloads=payloads,
            lengths=lengths,
        )
    return encode_frames(
        seed=header.seed,
        first_lsn=frame.first_lsn,
        record_type=frame.record_type,
        timestamp_us=frame.timestamp_us,
        durable_lsn=min(frame.durable_lsn, frame.first_lsn - 1),
        payloads=payloads,
        lengths=lengths,
    )
