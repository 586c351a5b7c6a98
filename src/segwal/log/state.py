"""The state every part of an open log shares, and the checks on it.

One ``LogState`` per open log: its directory and config, the lock that serialises changes,
whether it is open, failed or readonly, its META, the counters behind ``stats()``, and the
observers. The parts that change it each own their own piece: the segment catalog (the
segments), the append buffer (records not yet written), the group commit (written and
durable LSNs) and the appender (the active segment's writer). A check here only checks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from segwal.errors import ClosedError, ForkedError, ReadOnlyError, WalFailedError
from segwal.events import Event, ForkDetected, Observer
from segwal.format.keyring import KeyRing
from segwal.format.layout import FRAME_HEAD_SIZE
from segwal.format.meta import REWIND_HISTORY, Meta
from segwal.log.buffer import AppendBuffer
from segwal.log.catalog import SegmentCatalog, writer_info
from segwal.log.config import WalConfig
from segwal.log.telemetry import Telemetry
from segwal.storage.dictionaries import Dictionaries
from segwal.storage.forklocks import LOG, guard
from segwal.types import SegmentInfo, Stats

if TYPE_CHECKING:
    from segwal.log.commit import GroupCommit
    from segwal.storage.segment import SegmentWriter

log = logging.getLogger("segwal")


# A one-record frame's bytes besides its payload (format/layout.py: head and one length).
RECORD_OVERHEAD = FRAME_HEAD_SIZE + 4


def _no_tally() -> tuple[int, int]:
    return 0, 0


class LogState:
    """Shared fields of an open log (``lock`` guards every one that changes after open)."""

    commit: GroupCommit

    def __init__(self, path: str, config: WalConfig) -> None:
        self.path = path
        self.config = config
        self.fs = config.filesystem
        # How frames are encoded and decoded (compression, keys): checked here, at open.
        self.coding = config.coding(Dictionaries(self.fs, path))
        # Re-entrant because a failed barrier run by a thread that holds it (a checkpoint)
        # undoes under it too.
        self.lock = guard(threading.RLock(), LOG)
        self.closed = False
        self.failure: BaseException | None = None
        self.pid = os.getpid()  # the process that may change the log (see forked())
        self.meta = Meta()
        # The unwrapped log keys (an encrypted log opened with its key), set at open.
        self.keys: KeyRing | None = None
        self.rewinds = 0  # truncate_after calls: the same LSNs may now hold other bytes
        self.rewound_to: dict[int, int] = {}  # rewind count -> the LSN it rewound to
        self.catalog = SegmentCatalog(
            self.fs, path, track_readers=not config.readonly, cache_bytes=config.read_cache_bytes
        )
        self.buffer = AppendBuffer(config.buffer_bytes)
        self.writer: SegmentWriter | None = None
        self.counters = {"appends": 0, "records": 0, "payload_bytes": 0}
        self.rotations: dict[str, int] = {}
        self.io = {
            "written_bytes": 0,
            "writes": 0,
            "fsyncs": 0,
            "dir_fsyncs": 0,
            "created": 0,
            "meta_stores": 0,  # checkpoints, holds, rewinds: META replaced by this session
        }
        self.telemetry = Telemetry(path, config.slow_fsync_seconds)
        # A readonly view: the counters the writer last published in LOCK, if any.
        self.writer_counters: tuple[int, ...] | None = None
        self.recovery_cuts = 0  # cuts and quarantines this open's recovery made
        self._observers: tuple[Observer, ...] = tuple(config.observers)
        # The appends the appender's fast path counted on its own, left out of counters and
        # io: (appends, frame bytes), added when those are read (Appender.tally).
        self.tally: Callable[[], tuple[int, int]] = _no_tally

    # -- checks ---------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"the log at {self.path} is closed")

    def check_writable(self) -> SegmentWriter:
        """The active segment's writer, or the reason the log cannot change now."""
        if self.closed:
            raise ClosedError(f"the log at {self.path} is closed")
        writer = self.writer
        if writer is None:
            raise ReadOnlyError(f"the log at {self.path} was opened readonly")
        failure = self.failure
        if failure is not None:
            raise failure if isinstance(failure, ForkedError) else WalFailedError(failure)
        return writer

    def forked(self) -> None:
        """In a child forked from the writer: refuse every change from now on.

        The child inherited the lock and the open files; if it appended, parent and child
        would both acknowledge the same LSNs at the same offsets.
        """
        if self.writer is None or self.failure is not None:
            return
        child = os.getpid()
        self.failure = ForkedError(child, self.pid)
        self.emit(ForkDetected(pid=child, parent_pid=self.pid))

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.error("segwal log at %s failed: %r; reopen it to recover", self.path, exc)
        self.commit.fail(exc)

    def remember_rewinds(self) -> None:
        """Take the rewind count and history from META (at open, and at each readonly look)."""
        meta = self.meta
        self.rewinds = max(self.rewinds, meta.rewinds)
        self.rewound_to.update(meta.rewound_to)

    def rewound_below(self, seen: int, read_up_to: int) -> int | None:
        """The lowest LSN a rewind after rewind count ``seen`` went back to, if it is below
        ``read_up_to`` (a reader that read that far got records that were replaced); None
        when every later rewind left what the reader read alone."""
        if self.rewinds <= seen:
            return None
        known = [lsn for count, lsn in self.rewound_to.items() if seen < count <= self.rewinds]
        # A rewind whose target is no longer remembered (more than 64 ago): assume the worst.
        lowest = min(known) if len(known) == self.rewinds - seen else 0
        return lowest if lowest < read_up_to else None

    def rewound(self, lsn: int) -> None:
        """Count a rewind to ``lsn`` (META has it already), remembering the last 64."""
        self.rewinds = self.meta.rewinds
        self.rewound_to[self.rewinds] = lsn
        for count in [c for c in self.rewound_to if c <= self.rewinds - REWIND_HISTORY]:
            del self.rewound_to[count]

    # -- LSN watermarks -------------------------------------------------------------------

    @property
    def first_lsn(self) -> int:
        sealed = self.catalog.sealed.states
        if sealed:
            first = sealed[0].header.first_lsn
        elif self.writer is not None:
            first = self.writer.first_lsn
        elif self.catalog.tail is not None:
            first = self.catalog.tail.header.first_lsn
        else:
            first = 1
        return max(first, self.meta.first_lsn)

    @property
    def last_lsn(self) -> int:
        writer = self.writer
        if writer is not None:
            # Buffered appends have LSNs before they are written.
            written, given = writer.last_lsn, self.buffer.last_lsn
            return given if given > written else written
        catalog = self.catalog
        if catalog.tail is not None:
            return catalog.tail.last_lsn
        if catalog.sealed.states:
            return catalog.sealed.states[-1].last_lsn
        return self.meta.first_lsn - 1

    def segment_infos(self) -> list[SegmentInfo]:
        """Every segment, oldest first: the catalog's, then the active one (a writer's)."""
        infos = self.catalog.infos()
        if self.writer is not None:
            infos.append(writer_info(self.writer))
        return infos

    # -- counters and observers -----------------------------------------------------------

    def published_counters(self) -> tuple[int, ...]:
        """What the writer publishes in LOCK for ``stats()`` in other processes."""
        io, counters = self.io, self.counters
        n, frames = self.tally()
        return (
            counters["appends"] + n,
            counters["records"] + n,
            counters["payload_bytes"] + frames - n * RECORD_OVERHEAD,
            io["written_bytes"] + frames,
            io["fsyncs"],
            io["dir_fsyncs"],
        )

    def stats(self) -> Stats:
        io, buffered = self.io, len(self.buffer)
        n, frames = self.tally()
        with self.lock:
            sizes = [s.size for s in self.catalog.sealed.states]
            if self.writer is not None:
                sizes.append(self.writer.offset)
            elif self.catalog.tail is not None:
                sizes.append(self.catalog.tail.size)
            first, last = self.first_lsn, self.last_lsn
        telemetry = self.telemetry
        buckets, seconds, _count = telemetry.fsync_histogram()
        appends, records, payload, written, fsyncs, dir_fsyncs = (
            self.writer_counters
            if self.writer is None and self.writer_counters is not None
            else (
                # Buffered appends count from the moment they are accepted.
                self.counters["appends"] + buffered + n,
                self.counters["records"] + buffered + n,
                self.counters["payload_bytes"] + self.buffer.size + frames - n * RECORD_OVERHEAD,
                io["written_bytes"] + frames,
                io["fsyncs"],
                io["dir_fsyncs"],
            )
        )
        return Stats(
            appends=appends,
            records=records,
            payload_bytes=payload,
            written_bytes=written,
            writes=io["writes"] + n,
            fsyncs=fsyncs,
            dir_fsyncs=dir_fsyncs,
            rotations=dict(self.rotations),
            segments_created=io["created"],
            durable_lsn=self.commit.durable_lsn,
            first_lsn=first,
            last_lsn=last,
            segments=len(sizes),
            log_bytes=sum(sizes),
            recovery_cuts=self.recovery_cuts,
            corruption_errors=telemetry.corruption_errors,
            retention_deletions=telemetry.retention_deletions,
            fsync_buckets=buckets,
            fsync_seconds=seconds,
        )

    def observe(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def unobserve(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)

    @property
    def observed(self) -> bool:
        return bool(self._observers)

    def emit(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("segwal observer %r failed on %r", observer, event)
