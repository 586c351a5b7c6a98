"""What a writer tells readers in other processes through LOCK: the durable LSN, the rewind
count, its counters and a generation (``format/lock.py``, ``storage/lockfile.py``).

One publish per barrier, after its fdatasync, so the published durable LSN never runs ahead
of what is durable; ``announce`` bumps the generation for changes that move no LSN (META
replaced by a checkpoint, retention or a hold) so readonly views look again."""

from __future__ import annotations

import threading

from segwal.events import Durable
from segwal.log.state import RECORD_OVERHEAD, LogState, log
from segwal.storage.fileio import FileHandle
from segwal.storage.forklocks import LEAF, guard
from segwal.storage.lockfile import LockHandle, generation_of, publish_durable
from segwal.storage.lockfile import _pid as lockfile_pid


class Publisher:
    """The LOCK publications of one writable log."""

    def __init__(self, state: LogState, lock_handle: FileHandle) -> None:
        self._state = state
        self._handle = lock_handle
        self._published = 0
        self._lock = guard(threading.Lock(), LEAF)
        self.generation = generation_of(lock_handle)  # bumped by announce (format/lock.py)

    def publish(self, lsn: int) -> None:
        """Tell readers in other processes (LOCK) and observers that ``lsn`` is durable."""
        # The lock taken without a context manager's two calls: this runs once per barrier.
        lock = self._lock
        lock.acquire()
        try:
            # A barrier's publication may come after a rewind's republish: never more than
            # the group commit holds durable now (reset by the rewind).
            lsn = min(lsn, self._state.commit.durable_lsn)
            if lsn <= self._published:
                return
            self._published = lsn
            self._publish_locked(lsn)
        finally:
            lock.release()
        if self._state._observers:  # LogState.observed without its call
            self._state.emit(Durable(lsn=lsn))

    def binding(self) -> tuple[object, ...] | None:
        """What the compiled publication (format/_durable.c DurableWait) needs to do what
        ``publish`` does for a writer whose LOCK is mapped from a file: None otherwise."""
        handle = self._handle
        parts = handle.binding() if isinstance(handle, LockHandle) else None
        if parts is None:
            return None
        state = self._state

        def durable_event(lsn: int) -> None:
            state.emit(Durable(lsn=lsn))

        lock = self._lock
        return (
            vars(self),
            lock.acquire,
            lock.release,
            handle,
            *parts,
            RECORD_OVERHEAD,  # published_counters' arithmetic, done in C
            lockfile_pid,
            durable_event,
        )

    def _publish_locked(self, lsn: int) -> None:
        state = self._state
        try:
            publish_durable(
                self._handle,
                lsn,
                state.rewinds,
                state.published_counters(),
                generation=self.generation,
            )
        except OSError as exc:
            log.warning("could not publish durable LSN %d to readers: %s", lsn, exc)

    def announce(self) -> None:
        """Rewrite LOCK after a change readers see that moves no LSN, so readonly views in
        other processes look again."""
        with self._lock:
            self.generation += 1
            self._publish_locked(self._published)

    def republish(self, lsn: int) -> None:
        """After a rewind: publish the lower durable LSN and the new rewind count, so readers
        in other processes never take the rewound LSNs' new records for durable ones."""
        with self._lock:
            self._published = lsn
            self._publish_locked(lsn)

    def closed(self, durable_lsn: int) -> None:
        """The last publication of a clean close: pid 0, everything in the files durable."""
        state = self._state
        with self._lock:
            publish_durable(
                self._handle,
                durable_lsn,
                state.rewinds,
                state.published_counters(),
                closed=True,
                generation=self.generation,
            )
