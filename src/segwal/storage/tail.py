"""The active segment at open: the unsealed tail resumed, or the next segment created.

Whatever a killed writer left in the page cache (tail records, a seal) is made durable here
before a record in it is called durable or a next segment exists.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace

from segwal.format.features import HEADER_ENCRYPTED, HEADER_PREALLOCATED
from segwal.format.layout import SEAL_SIZE, ZERO_DIGEST
from segwal.format.meta import TOKEN_BYTES, TailFacts
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import FileSystem
from segwal.storage.index import build as build_index
from segwal.storage.index import save_tail
from segwal.storage.recovery import SegmentState
from segwal.storage.segment import SegmentWriter


def start_writer(
    fs: FileSystem,
    directory: str,
    segments: list[SegmentState],
    *,
    first_lsn: int,
    now_us: int,
    max_record_bytes: int,
    coding: Coding = PLAIN,
    log_id: bytes | None = None,
) -> tuple[SegmentWriter, bool]:
    """The active segment's writer: the unsealed tail resumed, or a new segment.

    Returns the writer and whether a new segment was created. A log opened with keys never
    appends plaintext: an unencrypted tail is sealed and the next segment is encrypted.
    ``log_id`` is the id a log with no segment left takes (its KEYS is bound to it); by
    default a fresh one.
    """
    tail = segments[-1] if segments else None
    if tail is not None and tail.seal is None:
        encrypt = coding.keys is not None and not tail.header.flags & HEADER_ENCRYPTED
        direct = coding.direct and bool(tail.header.flags & HEADER_PREALLOCATED)
        handle = fs.open_direct(tail.path) if direct else fs.open_write(tail.path)
        index = tail.index if tail.index is not None else build_index(handle, tail.end)
        writer = SegmentWriter(
            fs,
            handle,
            tail.header,
            offset=tail.end,
            last_lsn=tail.last_lsn,
            min_ts=tail.min_ts,
            max_ts=tail.max_ts,
            index=index,
            # A resumed segment keeps its header and salt; its key comes with a freshly
            # drawn nonce prefix (writing=True), as the frames after the cut are new.
            encoder=None if encrypt else coding.encoder(tail.header, path=tail.path),
            step=coding.preallocate,  # a segment without the flag is never padded
            direct=direct,
        )
        # Records a killed process left in the page cache are durable only after this.
        writer.handle.sync("open.sync")
        fs.sync_dir(directory, "open.sync_dir")
        if not encrypt:
            return writer, False
        # The caller's list names it sealed now, so it joins the sealed segments.
        tail = segments[-1] = replace(tail, seal=writer.seal(now_us), size=writer.offset)
        writer.close()
    if tail is None:
        log_id, sequence, prev_digest = log_id or uuid.uuid4().bytes, 0, ZERO_DIGEST
    elif tail.last_lsn < tail.header.first_lsn:
        # A sealed segment with no record: replace it in place, as rotation would have.
        log_id = tail.header.log_id
        sequence = tail.header.sequence
        prev_digest = tail.header.prev_digest
        first_lsn = tail.header.first_lsn
    else:
        seal = tail.seal
        assert seal is not None
        # A killed writer may have written this seal without its fdatasync: make it durable
        # before a next segment exists (every segment but the last must be sealed on disk).
        sealed = fs.open_write(tail.path)
        try:
            if tail.size > tail.end + SEAL_SIZE:
                # A preallocated segment sealed without its barrier still has its zeros
                # after the seal: trimmed under the same barrier, so every segment but the
                # last ends with its seal on disk.
                sealed.truncate(tail.end + SEAL_SIZE)
                tail = segments[-1] = replace(tail, size=tail.end + SEAL_SIZE)
            sealed.sync("open.sync")
        finally:
            sealed.close()
        log_id = tail.header.log_id
        sequence = tail.header.sequence + 1
        prev_digest = seal.digest
        first_lsn = tail.last_lsn + 1
    writer = SegmentWriter.create(
        fs,
        directory,
        log_id=log_id,
        sequence=sequence,
        first_lsn=first_lsn,
        created_us=now_us,
        max_record_bytes=max_record_bytes,
        prev_digest=prev_digest,
        coding=coding,
    )
    return writer, True


def save_closed_tail(fs: FileSystem, writer: SegmentWriter, rewinds: int) -> TailFacts | None:
    """At a clean close, after the last barrier: save the active segment's index as a
    sidecar bound to a token, and return the facts META's mark carries with it, so the next
    open needs no scan (recovery's ``closed_tail``). None for a preallocated segment, whose
    file size is not its data end: that one is always scanned.

    The token is a digest of what the close knows (segment, end, last LSN, time range, the
    log's rewind count), not random bytes, so a run is repeatable (the real/memory parity
    tests): a rewind, the only change that can give the same segment the same end and LSN
    with other records, counts in it. A stale sidecar that matched anyway would still have
    its entries checked before use (storage/index.py ``CheckedIndex``).
    """
    if writer.header.flags & HEADER_PREALLOCATED:
        return None
    name = writer.path.rsplit("/", 1)[-1]
    facts = (name, writer.offset, writer.last_lsn, writer.min_ts, writer.max_ts, rewinds)
    digest = hashlib.blake2b(repr(facts).encode(), digest_size=TOKEN_BYTES)
    digest.update(writer.header.log_id)
    token = digest.digest()
    save_tail(fs, writer.path, writer.index, token, writer.offset, writer.last_lsn)
    return TailFacts(token=token, min_ts=writer.min_ts, max_ts=writer.max_ts)
