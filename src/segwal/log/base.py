"""The state every part of an open log shares, its checks, and what it tells about itself.

``Wal`` is assembled from this base, :mod:`segwal.log.reading` and :mod:`segwal.log.maintenance`;
the base owns the fields (one lock guards them), the open/failed/readonly checks, and the
introspection that needs no I/O: LSN watermarks, segment infos and counters.
"""

from __future__ import annotations

import logging
import threading

from segwal.errors import ClosedError, ReadOnlyError, WalFailedError
from segwal.log.commit import GroupCommit
from segwal.log.config import WalConfig
from segwal.log.telemetry import Telemetry
from segwal.storage.fileio import FileHandle
from segwal.storage.meta import Meta
from segwal.storage.recovery import SegmentState
from segwal.storage.segment import SegmentWriter
from segwal.types import RecoveryReport, SegmentInfo, Stats

log = logging.getLogger("segwal")


def segment_info(state: SegmentState) -> SegmentInfo:
    """The public description of a recovered or sealed segment."""
    seal = state.seal
    return SegmentInfo(
        path=state.path,
        sequence=state.header.sequence,
        first_lsn=state.header.first_lsn,
        last_lsn=state.last_lsn,
        size_bytes=state.size,
        sealed=seal is not None,
        created_us=state.header.created_us,
        min_timestamp_us=state.min_ts,
        max_timestamp_us=state.max_ts,
        digest=seal.digest.hex() if seal is not None else "",
    )


def writer_info(writer: SegmentWriter) -> SegmentInfo:
    """The public description of the active segment."""
    return SegmentInfo(
        path=writer.path,
        sequence=writer.header.sequence,
        first_lsn=writer.first_lsn,
        last_lsn=writer.last_lsn,
        size_bytes=writer.offset,
        sealed=False,
        created_us=writer.header.created_us,
        min_timestamp_us=writer.min_ts,
        max_timestamp_us=writer.max_ts,
    )


def writer_state(writer: SegmentWriter) -> SegmentState:
    """The active segment as recovery would describe it (for rewinds)."""
    return SegmentState(
        path=writer.path,
        header=writer.header,
        size=writer.offset,
        end=writer.offset,
        last_lsn=writer.last_lsn,
        min_ts=writer.min_ts,
        max_ts=writer.max_ts,
    )


class WalBase:
    """Fields and checks shared by the parts of :class:`segwal.Wal`."""

    _commit: GroupCommit
    _report: RecoveryReport

    def __init__(self, path: str, config: WalConfig) -> None:
        self._path = str(path)
        self._config = config
        self._fs = config.filesystem
        # Guards every field below that changes after open; re-entrant because a failed
        # barrier run by a thread that holds it (a checkpoint) undoes under it too.
        self._lock = threading.RLock()
        self._closed = False
        self._failure: BaseException | None = None
        self._lock_handle: FileHandle | None = None
        self._writer: SegmentWriter | None = None
        self._sealed: list[SegmentState] = []
        self._tail: SegmentState | None = None  # readonly: the last segment as recovered
        self._meta = Meta()
        self._pins: dict[str, int] = {}  # segment path -> live readers on it
        self._doomed: set[str] = set()  # deleted by retention, waiting for readers
        self._rewinds = 0  # truncate_after calls: segment names may now mean other files
        self._last_ts = 0
        # Buffered single appends (buffer_bytes): LSNs given out, not yet written.
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_first = 0
        self._pending_last = 0
        self._pending_type = 0
        self._pending_ts = 0
        self._counters = {"appends": 0, "records": 0, "payload_bytes": 0}
        self._rotations: dict[str, int] = {}
        self._io = {"written_bytes": 0, "writes": 0, "fsyncs": 0, "dir_fsyncs": 0, "created": 0}
        self._telemetry = Telemetry(self._path, config.slow_fsync_seconds)

    # -- checks ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the log at {self._path} is closed")

    def _check_writable(self) -> SegmentWriter:
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(f"the log at {self._path} was opened readonly")
        if self._failure is not None:
            raise WalFailedError(self._failure)
        if self._pending:
            # Whatever comes next (a batch, a barrier, a rotation, a truncation) must see
            # the buffered records in the file first, in LSN order.
            self._flush_pending()
            assert self._writer is not None
        return self._writer

    def _flush_pending(self) -> None:
        """Write the buffered single appends (overridden by Wal, which owns the writer)."""

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("segwal log at %s failed: %r; reopen it to recover", self._path, exc)
        self._commit.fail(exc)

    # -- introspection --------------------------------------------------------------------

    def segments(self) -> list[SegmentInfo]:
        """Every segment of the log, oldest first; the last one is the active segment."""
        self._check_open()
        with self._lock:
            if self._pending and self._failure is None:
                self._flush_pending()  # the segments then hold every appended record
            infos = [segment_info(s) for s in self._sealed]
            if self._writer is not None:
                infos.append(writer_info(self._writer))
            elif self._tail is not None:
                infos.append(segment_info(self._tail))
        return infos

    @property
    def path(self) -> str:
        """The log's directory."""
        return self._path

    @property
    def first_lsn(self) -> int:
        """The LSN of the oldest record the log holds (``last_lsn + 1`` when it holds none)."""
        if self._sealed:
            first = self._sealed[0].header.first_lsn
        elif self._writer is not None:
            first = self._writer.first_lsn
        elif self._tail is not None:
            first = self._tail.header.first_lsn
        else:
            first = 1
        return max(first, self._meta.first_lsn)

    @property
    def last_lsn(self) -> int:
        """The LSN of the newest record appended (0 when the log has never held one)."""
        if self._writer is not None:
            # Buffered appends have LSNs before they are written; _pending_last is reset
            # only once the write has moved the writer's last LSN up to it.
            written, given = self._writer.last_lsn, self._pending_last
            return given if given > written else written
        if self._tail is not None:
            return self._tail.last_lsn
        if self._sealed:
            return self._sealed[-1].last_lsn
        return self._meta.first_lsn - 1

    @property
    def next_lsn(self) -> int:
        """The LSN the next appended record gets."""
        return self.last_lsn + 1

    @property
    def durable_lsn(self) -> int:
        """Every record up to this LSN survives a crash of the process or the machine."""
        return self._commit.durable_lsn

    @property
    def recovery(self) -> RecoveryReport:
        """What opening the log found and did."""
        return self._report

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readonly(self) -> bool:
        return self._config.readonly

    def stats(self) -> Stats:
        """Counters since open (appends, records, bytes, barriers, rotations by reason, fsync
        durations, recovery cuts, corruption errors, retention deletions) and the log as it
        is now (durable, first and last LSN, segments, bytes)."""
        io = self._io
        with self._lock:
            sizes = [s.size for s in self._sealed]
            if self._writer is not None:
                sizes.append(self._writer.offset)
            elif self._tail is not None:
                sizes.append(self._tail.size)
            first, last = self.first_lsn, self.last_lsn
        telemetry = self._telemetry
        buckets, seconds, _count = telemetry.fsync_histogram()
        report: RecoveryReport | None = getattr(self, "_report", None)  # None while opening
        return Stats(
            # Buffered appends count from the moment they are accepted.
            appends=self._counters["appends"] + len(self._pending),
            records=self._counters["records"] + len(self._pending),
            payload_bytes=self._counters["payload_bytes"] + self._pending_bytes,
            written_bytes=io["written_bytes"],
            writes=io["writes"],
            fsyncs=io["fsyncs"],
            dir_fsyncs=io["dir_fsyncs"],
            rotations=dict(self._rotations),
            segments_created=io["created"],
            durable_lsn=self._commit.durable_lsn,
            first_lsn=first,
            last_lsn=last,
            segments=len(sizes),
            log_bytes=sum(sizes),
            recovery_cuts=(
                len(report.cuts) + len(report.quarantined)
                if report and not self._config.readonly
                else 0
            ),
            corruption_errors=telemetry.corruption_errors,
            retention_deletions=telemetry.retention_deletions,
            fsync_buckets=buckets,
            fsync_seconds=seconds,
        )
