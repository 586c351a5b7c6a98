"""Group commit: one fdatasync covers every appender waiting when it starts.

The first thread that needs a barrier becomes the leader: it notes how far the segment has
been written, runs the fdatasync without holding any lock, then publishes the new durable
LSN and wakes the followers. Threads that arrive while a barrier runs wait for it and, if
it did not cover them, one of them leads the next. Rotation takes the barrier for itself
(``exclusive``) so no fdatasync ever runs on a segment that is being sealed and closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic

from segwal.errors import WalFailedError


class GroupCommit:
    """The durable LSN of a log and the barriers that advance it."""

    def __init__(
        self,
        *,
        durable_lsn: int,
        barrier: Callable[[], None],
        on_durable: Callable[[int], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._barrier = barrier  # fdatasync of the active segment
        self._on_durable = on_durable  # called with the new durable LSN, under no lock
        self._on_failure = on_failure
        self.durable_lsn = durable_lsn
        self.written_lsn = durable_lsn
        self._busy = False
        self._failed: BaseException | None = None
        self._closed = False
        self._watchers = 0  # followers waiting for any new write
        self.barriers = 0

    def wrote(self, lsn: int) -> None:
        """Record that frames up to ``lsn`` are written (not yet durable)."""
        # Writers are serialised by the log's lock and an int store is atomic, so only the
        # wake-up of followers needs the condition (a follower checks under it before waiting).
        self.written_lsn = lsn
        if self._watchers:
            with self._cond:
                self._cond.notify_all()

    def close(self) -> None:
        """Wake every follower: the log is closing."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_beyond(self, lsn: int, *, written: bool, timeout: float | None) -> bool:
        """Wait until the durable (or, with ``written``, the written) LSN passes ``lsn``.

        Returns False when ``timeout`` passes, or the log closes or fails first.
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            self._watchers += 1
            try:
                while (self.written_lsn if written else self.durable_lsn) <= lsn:
                    if self._closed or self._failed is not None:
                        return False
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._watchers -= 1

    def reset(self, lsn: int) -> None:
        """Set both watermarks, for a log whose tail was rewound to ``lsn``."""
        with self._cond:
            self.written_lsn = lsn
            self.durable_lsn = lsn

    def fail(self, exc: BaseException) -> None:
        """Mark the log failed and wake every waiter so it raises."""
        with self._cond:
            if self._failed is None:
                self._failed = exc
            self._cond.notify_all()

    def wait_durable(self, lsn: int, *, lead: bool, timeout: float | None = None) -> bool:
        """Block until ``lsn`` is durable; True when it is, False when ``timeout`` passed.

        With ``lead`` the caller runs a barrier itself when none is running that covers it;
        without it, the caller only waits (for the interval flusher or another thread).
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            while self.durable_lsn < lsn:
                if self._failed is not None:
                    raise WalFailedError(self._failed)
                if lead and not self._busy:
                    self._lead()
                    continue
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _lead(self) -> None:
        # Called with the condition held; releases it around the barrier itself.
        target = self.written_lsn
        self._busy = True
        self._cond.release()
        error: BaseException | None = None
        try:
            self._barrier()
        except BaseException as exc:
            error = exc
        finally:
            self._cond.acquire()
            self._busy = False
            self.barriers += 1
            if error is None:
                self.durable_lsn = max(self.durable_lsn, target)
            elif self._failed is None:
                self._failed = error
            self._cond.notify_all()
        if error is not None:
            self._cond.release()
            try:
                self._on_failure(error)
            finally:
                self._cond.acquire()
            raise error
        self._cond.release()
        try:
            self._on_durable(target)
        finally:
            self._cond.acquire()

    def flush(self) -> None:
        """Run one barrier now if anything written is not durable (the interval flusher)."""
        with self._cond:
            if self._failed is not None or self._busy or self.durable_lsn >= self.written_lsn:
                return
            self._lead()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off every barrier while the caller seals or swaps the active segment.

        The caller makes everything written durable itself and then calls ``publish``; on
        leaving, waiters re-check the durable LSN.
        """
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def publish(self, lsn: int) -> None:
        """Declare ``lsn`` durable after a barrier the caller ran itself (seal, sync at open)."""
        with self._cond:
            self.durable_lsn = max(self.durable_lsn, lsn)
            self._cond.notify_all()
        self._on_durable(lsn)
