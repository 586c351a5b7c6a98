"""One segment file: the writer of the active segment, and the reader of any segment.

The writer owns the tail offset, writes one encoded buffer per call, syncs, and seals; it
never decides when to rotate and never assigns LSNs. The reader checks headers and seals and
streams checked frames up to a bound; it never crosses into another segment.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable

import blake3

from segwal.errors import (
    ContinuityError,
    SealError,
    SegmentHeaderError,
    UnsupportedFormatError,
)
from segwal.format.features import HEADER_PREALLOCATED
from segwal.format.frames import FrameEncoder
from segwal.format.layout import (
    HEADER_SIZE,
    MAX_LSN,
    SEAL_SIZE,
    FormatError,
    Seal,
    SegmentHeader,
    decode_header,
    decode_seal,
    encode_header,
    encode_seal,
)
from segwal.format.naming import segment_name, temp_name
from segwal.storage.blocks import DirectTail
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import Buffer, FileHandle, FileSystem
from segwal.storage.index import SparseIndex

log = logging.getLogger("segwal")

# Written bytes after which a segment's writer starts their writeback (SegmentWriter.write).
WRITEBACK_BYTES = 4 << 20
# The newest bytes are left out of it (whole pages): the next append rewrites the tail page,
# which would wait for its writeback on stable-page devices (RocksDB's kBytesNotSyncRange).
WRITEBACK_LAG = 1 << 20
DIGEST_CHUNK = 4 << 20  # a point read needs little; a stream doubles up to READ_CHUNK


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
        # Bytes a completed barrier covers (the writer starts synced); the group commit's
        # barrier (Appender.barrier) advances it after each fdatasync of the segment.
        self.synced = offset
        # Where the last start of writeback ended (write); a handle without the operation
        # (a FileSystem's of its own) and O_DIRECT segments (no dirty pages) never start one.
        self._kicked = offset
        self._writeback = None if self.direct else getattr(handle, "start_writeback", None)
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
        offset = self.offset
        end = offset + len(data)
        direct = self.direct
        if direct is not None:
            padded = direct.end(offset, len(data))
            if self.step and padded > self.allocated:
                self._grow(padded)
            direct.put(data, offset)
        else:
            if self.step and end > self.allocated:
                self._grow(end)
            self.handle.pwrite(data, offset)
            upto = (end - WRITEBACK_LAG) & ~4095
            if upto - self._kicked >= WRITEBACK_BYTES and self._writeback is not None:
                # The disk writes while the appends go on: the next barrier (a sync, the
                # seal) waits for less, as with RocksDB's bytes_per_sync.
                self._writeback(self._kicked, upto - self._kicked)
                self._kicked = upto
        # The index's own test first: a call per write for one entry per interval costs
        # more than the test (durable preallocated and direct appends come this way).
        index = self.index
        if offset >= index._next:
            index.add(self.last_lsn + 1, offset, timestamp_us)
        self.offset = end
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
