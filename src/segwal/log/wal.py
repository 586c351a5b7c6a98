"""The log's facade: ``Wal``, a thin front over the parts it is composed of.

``LogState`` (shared fields and checks), ``Appender`` (appends, rotation, barriers),
``GroupCommit`` (written and durable LSNs), ``Reader`` (read, replay, follow),
``Maintenance`` (truncation, retention, holds, cursors) and ``SegmentCatalog`` (the
segments and their readers). ``Wal`` wires them together, owns opening and closing, and
delegates everything else. It is thread-safe.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import monotonic
from typing import Any

from segwal.errors import NotFoundError
from segwal.events import Observer
from segwal.format import lock
from segwal.format.lock import MAPPED_SIZE
from segwal.log import arguments
from segwal.log.appender import Appender
from segwal.log.commit import GroupCommit
from segwal.log.config import WalConfig
from segwal.log.cursors import Cursor
from segwal.log.flusher import IntervalFlusher
from segwal.log.maintenance import Maintenance
from segwal.log.opening import load_view, open_readonly, open_writer
from segwal.log.plans import RetentionResult, TruncatePlan, TruncateResult
from segwal.log.reading import Reader
from segwal.log.retention import Decision
from segwal.log.state import LogState
from segwal.storage.fileio import FileSystem
from segwal.storage.forklocks import OUTER, guard
from segwal.storage.lockfile import LockWatch
from segwal.types import Batch, FrameRecords, Record, RecoveryReport, SegmentInfo, Stats


def _view_key(raw: bytes | None) -> bytes | None:
    """LOCK's bytes when they can vouch that nothing changed while they stay the same."""
    if raw is None:
        return None
    found = lock.decode(raw)
    return raw if found is not None and found.generation is not None else None


def _same_session(key: bytes | None, raw: bytes | None) -> bool:
    """Whether LOCK still names the writer session of the view's last plan: the same pid
    and generation (a writer that opens the log bumps it, docs/FORMAT.md)."""
    if key is None or raw is None:
        return False
    before, now = lock.decode(key), lock.decode(raw)
    return (
        before is not None
        and now is not None
        and now.generation is not None
        and (before.pid, before.generation) == (now.pid, now.generation)
    )


_writers: weakref.WeakSet[LogState] = weakref.WeakSet()  # open writable logs, for forks


def _after_fork_in_child() -> None:
    for state in list(_writers):
        state.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Wal:
    """A segmented write-ahead log in one directory. Use :func:`segwal.open` to get one."""

    def __init__(self, path: str, config: WalConfig) -> None:
        state = self._state = LogState(str(path), config)
        self._appender: Appender | None = None
        self._flusher: IntervalFlusher | None = None
        if config.readonly:
            state.commit = GroupCommit(
                durable_lsn=0, barrier=_no_barrier, on_durable=_ignore, on_failure=_ignore
            )
            self._reader = Reader(state, flush_buffer=None, refresh_view=self._look)
            self._maintenance = Maintenance(state, None)
            self._view_lock = guard(threading.Lock(), OUTER)
            self._lock_watch = LockWatch(state.fs, state.path)
            self._fast_look: tuple[Any, bytes, float] | None = None
            seen = self._lock_watch.read()  # before the plan: a change after it shows
            self._report = open_readonly(state)
            self._view_key = _view_key(seen)
            return
        lock_handle, self._report, last_ts = open_writer(state)
        appender = self._appender = Appender(state, lock_handle, self._retain_after_seal)
        # The hot path without the wrapper's frame (about 6% of a small append): the
        # appender's own checks raise what this method would, ClosedError included.
        self.append = appender.append  # type: ignore[method-assign]
        appender.resume_stamps(last_ts)
        state.commit = GroupCommit(
            durable_lsn=0,
            barrier=appender.barrier,
            on_durable=appender.publish,
            on_failure=appender.barrier_failed,
        )
        self._reader = Reader(state, flush_buffer=appender.flush_buffer, refresh_view=None)
        self._maintenance = Maintenance(state, appender)
        assert state.writer is not None
        last = state.writer.last_lsn
        state.commit.reset(last)
        appender.publish(last)
        _writers.add(state)
        self._flusher = IntervalFlusher(state, appender) if config.sync == "interval" else None

    def _refresh_view(self) -> None:
        """Readonly: plan the view from the directory again."""
        state = self._state
        with self._view_lock:
            seen = self._lock_watch.read()
            load_view(state, same_writer=_same_session(self._view_key, seen))
            self._view_key = _view_key(seen)

    def _look(self) -> None:
        """Readonly reads: plan the view again only when LOCK's bytes changed since the last
        plan. The writer rewrites them on every change a reader sees (format/lock.py); LOCK
        without a generation (a writer before 0.3, no LOCK) means planning every time."""
        fast = self._fast_look
        if fast is not None:
            # No lock, no call: the mapped bytes still equal the key of the last plan (a
            # copy equal to it was no torn one: LockWatch.same). Replaced whole, never
            # changed, so a racing plan leaves an older triple, which only costs a plan.
            region, known, until = fast
            try:
                if region[0:MAPPED_SIZE] == known and monotonic() < until:
                    return
            except ValueError:  # the region was closed by a reopen meanwhile
                pass
        state = self._state
        with self._view_lock:
            key = self._view_key
            if key is not None and self._lock_watch.same(key):
                self._remember_fast(key)
                return  # no system call (docs/FORMAT.md "LOCK mapping")
            seen = self._lock_watch.read()
            if seen is not None and seen == key:
                return
            load_view(state, same_writer=_same_session(key, seen))
            self._view_key = _view_key(seen)
            self._remember_fast(self._view_key)

    def _remember_fast(self, key: bytes | None) -> None:
        """What ``_look`` checks without the view lock; the caller holds it."""
        fast = self._lock_watch.fast() if key is not None else None
        self._fast_look = None if fast is None or key is None else (fast[0], key, fast[1])

    def _retain_after_seal(self) -> None:
        self._maintenance.retain_after_seal()

    def _refuse(self) -> Appender:
        """A readonly log's answer to a change: ClosedError or ReadOnlyError."""
        self._state.check_writable()
        raise AssertionError("a readonly log has no writer")

    # -- appending ------------------------------------------------------------------------

    def append(self, payload: bytes | bytearray | memoryview, type: int = 0) -> int:
        """Append one record; return its LSN. With sync="always" it is durable on return."""
        appender = self._appender or self._refuse()
        return appender.append(payload, type)

    def append_batch(
        self, payloads: Iterable[bytes | bytearray | memoryview], type: int = 0
    ) -> range:
        """Append records atomically: after a crash all of them are there, or none."""
        appender = self._appender or self._refuse()
        return appender.append_batch(payloads, type)

    def append_many(
        self, requests: Sequence[tuple[Iterable[bytes | bytearray | memoryview], int]]
    ) -> list[range | Exception]:
        """Append several batches, ``(payloads, type)`` each, with one write and (with
        sync="always") one barrier. Each is its own atomic batch and is checked on its own:
        a bad one gets its exception in its place and takes no LSN. ``segwal.aio`` drains
        its queue through this."""
        return (self._appender or self._refuse()).append_many(requests)

    def rotate(self) -> SegmentInfo | None:
        """Seal the active segment and start the next; None when it holds no record."""
        return (self._appender or self._refuse()).rotate()

    def sync(self) -> int:
        """Make every record appended so far durable; return the durable LSN."""
        return (self._appender or self._refuse()).sync()

    def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        """Wait until ``lsn`` is durable; False if ``timeout`` seconds passed first.

        With sync="interval" this waits for the background flusher; in the other modes the
        caller runs (or joins) a barrier itself.
        """
        state = self._state
        state.check_open()
        lsn = arguments.lsn(lsn)
        timeout = arguments.timeout(timeout)
        if lsn > state.last_lsn:
            raise NotFoundError(
                f"LSN {lsn} has not been appended (last LSN is {state.last_lsn})",
                lsn=lsn,
                first_lsn=state.first_lsn,
                last_lsn=state.last_lsn,
            )
        if self._appender is None:
            return state.commit.durable_lsn >= lsn
        return self._appender.wait_durable(lsn, timeout)

    def refresh(self) -> None:
        """Readonly: pick up what the writer has made durable since the last look."""
        self._state.check_open()
        if self._appender is None:
            self._refresh_view()

    @property
    def filesystem(self) -> FileSystem:
        """The file system this log's files go through (``filesystem=`` of open; the OS by
        default). Tools beside the log (the archive) use it for their own files, so the
        crash-state enumeration on the in-memory file system covers them too."""
        return self._state.config.filesystem

    @property
    def rewinds(self) -> int:
        """How many times the log was rewound (``truncate_after``) over its life: the same
        LSN under another rewind count may hold other bytes."""
        return self._state.rewinds

    def rewound_below(self, rewinds: int, lsn: int) -> int | None:
        """For a reader that read up to ``lsn`` when the rewind count was ``rewinds``: the
        lowest LSN a later rewind went back to, if it is below ``lsn`` (the records above it
        that the reader had were replaced: it fell behind), else None. ``follow`` and cursors
        check this themselves; it is for readers that page on their own (``segwal.aio``)."""
        state = self._state
        state.check_open()
        return state.rewound_below(arguments.integer(rewinds, "rewinds"), arguments.lsn(lsn))

    # -- reading --------------------------------------------------------------------------

    def read(self, lsn: int, *, unsynced: bool = False) -> Record:
        """The record with this LSN. Only durable records, unless ``unsynced`` is True."""
        return self._reader.read(lsn, unsynced=unsynced)

    def replay(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, unsynced: bool = False
    ) -> Iterator[Record]:
        """Stream records ``from_lsn..to_lsn`` (inclusive) in bounded memory.

        Only durable records are yielded unless ``unsynced`` is True: a reader never sees a
        record that a crash could still take back. ``from_lsn`` below the first LSN starts
        at the first LSN; the range is fixed when ``replay`` is called.
        """
        return self._reader.replay(from_lsn, to_lsn, unsynced=unsynced)

    def replay_frames(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, unsynced: bool = False
    ) -> Iterator[FrameRecords]:
        """``replay`` one stored frame at a time: each item holds a frame's payloads (the
        records ``first_lsn``, ``first_lsn + 1``, ... sharing its type and timestamp), cut to
        ``from_lsn..to_lsn``, with no ``Record`` object per payload. The same records, bounds,
        checks and errors as ``replay``; how records are grouped into frames is the writer's
        (a batch is one frame, or several past about 1 MiB) and may change between versions.
        """
        return self._reader.replay_frames(from_lsn, to_lsn, unsynced=unsynced)

    def read_batch(
        self,
        from_lsn: int,
        *,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        unsynced: bool = False,
    ) -> Batch:
        """One page of records from ``from_lsn``: at most ``max_records`` records and about
        ``max_bytes`` of payload (at least one record, however large). Seeks through the
        sparse index: a page costs the same wherever it starts."""
        return self._reader.read_batch(
            from_lsn, max_records=max_records, max_bytes=max_bytes, unsynced=unsynced
        )

    def lsn_at(self, timestamp_us: int, *, unsynced: bool = False) -> int:
        """The first LSN appended at or after ``timestamp_us`` (microseconds since the epoch);
        past the newest record, the next LSN to be appended."""
        return self._reader.lsn_at(timestamp_us, unsynced=unsynced)

    def follow(
        self,
        from_lsn: int | None = None,
        *,
        timeout: float | None = None,
        unsynced: bool = False,
    ) -> Iterator[Record]:
        """Yield records from ``from_lsn`` as they become durable, waiting for more.

        ``timeout`` is how long to wait for the next record; when it passes with nothing
        new, the iteration ends (None waits for ever, until the log closes). Survives
        rotation; raises ReaderFellBehindError when retention removed what it needs.
        """
        return self._reader.follow(from_lsn, timeout=timeout, unsynced=unsynced)

    # -- truncation, retention, holds, cursors ---------------------------------------------

    def truncate_plan(self, *, before: int | None = None, after: int | None = None) -> TruncatePlan:
        """What ``truncate_before(before)`` or ``truncate_after(after)`` would do now (give
        one); raises what the truncation would raise. Works on readonly opens."""
        return self._maintenance.truncate_plan(before=before, after=after)

    def truncate_before(self, lsn: int) -> TruncateResult:
        """A checkpoint: records below ``lsn`` are never returned again, even after a crash.

        The new first LSN is made durable first; then whole sealed segments below it are
        deleted. ``lsn`` may be ``last_lsn + 1`` to drop every record.
        """
        return self._maintenance.truncate_before(lsn)

    def truncate_after(self, lsn: int) -> TruncateResult:
        """Rewind the tail: records above ``lsn`` are dropped; the next append gets ``lsn + 1``.

        Crash-safe at every step: the intent is recorded in META, later segments are
        deleted, the segment holding ``lsn`` is rewritten aside and renamed into place, and
        the intent is cleared; recovery finishes an interrupted rewind.
        """
        return self._maintenance.truncate_after(lsn)

    def retention_plan(self) -> list[Decision]:
        """For each segment, whether the configured rules would delete it and what keeps it."""
        return self._maintenance.retention_plan()

    def apply_retention(self) -> RetentionResult:
        """Delete the sealed segments the configured rules let go (also done on rotation)."""
        return self._maintenance.apply_retention()

    def prune_through(self, timestamp_us: int) -> RetentionResult:
        """Delete sealed segments whose records are all at or before ``timestamp_us``."""
        return self._maintenance.prune_through(timestamp_us)

    def hold(self, name: str, lsn: int) -> None:
        """Keep every record at or above ``lsn`` until ``release(name)``; survives restarts."""
        self._maintenance.hold(name, lsn)

    def release(self, name: str) -> bool:
        """Drop the hold ``name``; False when there was none. ``cursor:NAME`` deletes the
        consumer cursor NAME (its position is its hold)."""
        return self._maintenance.release(name)

    def holds(self) -> dict[str, int]:
        """What keeps records: each hold's and each consumer cursor's (``cursor:NAME``)
        lowest LSN."""
        return self._maintenance.holds()

    def cursor(self, name: str, *, start: int | None = None) -> Cursor:
        """The consumer cursor ``name``, created at ``start`` (default: the first LSN).

        Its position persists in its own file and holds its records against retention, so
        a consumer restarts where it left off. Works on readonly opens too: committing a
        cursor writes only the cursor's file, never the log's.
        """
        return self._maintenance.cursor(self, name, start=start)

    def cursors(self) -> dict[str, int]:
        """Every consumer cursor: name -> the next LSN it will read."""
        return self._maintenance.cursors()

    def _commit_cursor(self, name: str, position: int) -> int:
        return self._maintenance.commit_cursor(name, position)

    def _check_cursor(self, name: str, position: int, rewinds: int) -> None:
        self._maintenance.check_cursor(name, position, rewinds)

    def _delete_cursor(self, name: str) -> bool:
        return self._maintenance.delete_cursor(name)

    # -- introspection --------------------------------------------------------------------

    def segments(self) -> list[SegmentInfo]:
        """Every segment of the log, oldest first; the last one is the active segment."""
        state = self._state
        state.check_open()
        with state.lock:
            if self._appender is not None and state.buffer.pending and state.failure is None:
                self._appender.flush_buffer()  # the segments then hold every appended record
            return state.segment_infos()

    @property
    def path(self) -> str:
        """The log's directory."""
        return self._state.path

    @property
    def first_lsn(self) -> int:
        """The LSN of the oldest record the log holds (``last_lsn + 1`` when it holds none)."""
        return self._state.first_lsn

    @property
    def last_lsn(self) -> int:
        """The LSN of the newest record appended (0 when the log has never held one)."""
        return self._state.last_lsn

    @property
    def next_lsn(self) -> int:
        """The LSN the next appended record gets."""
        return self._state.last_lsn + 1

    @property
    def durable_lsn(self) -> int:
        """Every record up to this LSN survives a crash of the process or the machine."""
        return self._state.commit.durable_lsn

    @property
    def recovery(self) -> RecoveryReport:
        """What opening the log found and did."""
        return self._report

    @property
    def closed(self) -> bool:
        return self._state.closed

    @property
    def readonly(self) -> bool:
        return self._state.config.readonly

    def stats(self) -> Stats:
        """Counters since open: appends, records, bytes, barriers, rotations by reason."""
        return self._state.stats()

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` for every event of :mod:`segwal.events` from now on;
        returns the function that stops it. Observers must be quick and must not call back
        into the log; an exception in one is logged and ignored."""
        state = self._state
        state.observe(observer)
        return lambda: state.unobserve(observer)

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Make every appended record durable, then release the files and the lock."""
        state = self._state
        if state.closed:
            return
        appender = self._appender
        if self._flusher is not None:
            self._flusher.stop()
        flush_error: BaseException | None = None
        with state.lock:
            if state.closed:
                return
            if appender is not None and state.buffer.pending and state.failure is None:
                try:
                    appender.flush_buffer()
                except BaseException as exc:  # raised once the files are released
                    flush_error = exc
            state.closed = True
        _writers.discard(state)
        if appender is None:
            with self._view_lock:  # a readonly view's look in progress ends first
                self._lock_watch.close()
        state.catalog.close()
        state.commit.close()  # followers waiting for records end their iteration
        if appender is not None:
            appender.close(flush_error)

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._state
        status = "closed" if state.closed else ("failed" if state.failure else "open")
        return f"<segwal.Wal {state.path!r} {status} LSNs {state.first_lsn}..{state.last_lsn}>"


def _no_barrier() -> None:
    """A readonly log runs no barrier: its durable LSN is what the writer published."""


def _ignore(_value: object) -> None:
    pass
