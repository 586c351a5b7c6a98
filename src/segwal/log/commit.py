"""Group commit: one fdatasync covers every appender waiting when it starts.

The first thread that needs a barrier becomes the leader: it notes how far the segment has
been written, runs the fdatasync without holding any lock, then publishes the new durable
LSN. Threads that arrive while a barrier runs queue up, each on a lock of its own. When a
barrier ends, the leader wakes, when some are left that it did not cover, the lowest of them
to lead the next barrier (first, so the next fdatasync starts before the covered threads
run), and two of the waiters it covered; each covered waiter woken wakes the next one as it
resumes, a chain with two links under way. No thread is woken only to find it must sleep
again, as with a condition's ``notify_all``, and few only to queue for the GIL: woken all
at once, 20-30 covered threads of 64 queued for the GIL (one more sleep and wake-up each),
preempted the leader that was waking them while it held the GIL, and crowded the log's
lock behind any append that lost the GIL under it: a convoy that, once formed, lasted. At 64
threads of durable appends (ten runs of one second each), all at once: five runs at 42-61k
appends/s (2.3-2.6 voluntary and 0.3-0.6 involuntary context switches per append) and five
in the convoy at 15-30k/s (60-76% of the threads' time blocked in the append, 8-12 records
per fdatasync, 4-5 switches per append); with the chain: ten at 66-78k/s (1.4 and 0.2).
While another process keeps a CPU busy the chain can fall behind the barriers (10-16
records per fdatasync; leaders, woken out of turn, append more often than the others) at
about the all-at-once rate (42-57k/s both, paired).
Rotation takes the barrier for itself (``exclusive``) so no fdatasync ever runs on a
segment that is being sealed and closed.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from time import monotonic
from typing import Final, NoReturn

from segwal.errors import WalFailedError
from segwal.storage.forklocks import LEAF, guard

# A queued waiter: its LSN, an arrival number (ties), whether it may lead, and the lock it
# sleeps on (held until a barrier covers it, or it is chosen to lead, or the log fails).
_Waiter = tuple[int, int, bool, threading.Lock]
# Covered waiters woken ahead, each waking the next as it resumes: two keep one thread ready
# to take the GIL while another runs (one alone capped 64 threads near 40k appends/s, the
# chain's pace; all at once is the herd the module docstring describes).
_CHAIN_WIDTH: Final = 2


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
        self._mutex = guard(threading.Lock(), LEAF)
        # Rare waits (exclusive, wait_beyond) sleep on this condition over the same mutex.
        self._cond = threading.Condition(self._mutex)
        self._barrier = barrier  # fdatasync of the active segment
        self._on_durable = on_durable  # called with the new durable LSN, under no lock
        self._on_failure = on_failure
        self.durable_lsn = durable_lsn
        self.written_lsn = durable_lsn
        self._busy = False
        self._failed: BaseException | None = None
        self._closed = False
        self._watchers = 0  # threads in wait_beyond or exclusive, on the condition
        self._queue: list[_Waiter] = []  # a heap by LSN: threads in wait_durable
        # Covered waiters still asleep, in LSN order, and the arrival numbers of those woken
        # along the chain that have not yet woken the next (at most _CHAIN_WIDTH).
        self._ready: deque[_Waiter] = deque()
        self._batons: set[int] = set()
        self._arrivals = count()
        self.barriers = 0
        self.resets = 0  # rewinds (reset): a waiter for a rewound LSN gives up

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
        with self._mutex:
            self.written_lsn = lsn
            self.durable_lsn = lsn
            self.resets += 1

    def fail(self, exc: BaseException) -> None:
        """Mark the log failed and wake every waiter so it raises."""
        with self._mutex:
            if self._failed is None:
                self._failed = exc
            self._wake_all()

    def wait_durable(
        self, lsn: int, *, lead: bool, timeout: float | None = None, resets: int | None = None
    ) -> bool:
        """Block until ``lsn`` is durable; True when it is, False when ``timeout`` passed or a
        rewind (``reset``) removed ``lsn`` meanwhile.

        With ``lead`` the caller runs a barrier itself when none is running that covers it;
        without it, the caller only waits (for the interval flusher or another thread).
        ``resets``: the rewind count when the caller's wait began, if it began earlier (the
        compiled solo barrier, ``hooks``); a rewind since then ends the wait.
        """
        mutex = self._mutex
        mutex.acquire()
        if resets is None:
            resets = self.resets  # a rewind meanwhile may remove lsn: then no barrier covers it
        if lead and not self._busy and self.durable_lsn < lsn and self._failed is None:
            # The solo barrier, the usual case of one writer: nobody leads, so this thread
            # does at once, and is done without taking the mutex again once it is covered.
            self._lead_once()
            if self.durable_lsn >= lsn:
                return True
            mutex.acquire()
        deadline = None if timeout is None else monotonic() + timeout
        try:
            while self.durable_lsn < lsn:
                if self._failed is not None:
                    raise WalFailedError(self._failed)
                if self.resets != resets:
                    self._pass_on()
                    return False  # rewound below lsn: its record is gone, not durable
                if lead and not self._busy:
                    self._lead()
                    continue
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    self._pass_on()
                    return False
                sleeper = threading.Lock()
                sleeper.acquire()
                entry = (lsn, next(self._arrivals), lead, sleeper)
                heapq.heappush(self._queue, entry)
                mutex.release()
                woken = False
                try:
                    woken = sleeper.acquire(True, -1 if remaining is None else remaining)
                finally:
                    mutex.acquire()
                    if entry[1] in self._batons:  # woken along the chain (or timed out as it was)
                        self._batons.remove(entry[1])
                        self._pass_baton()
                    if not woken:  # timed out or interrupted, unless a wake-up raced it
                        self._dequeue(entry)
            return True
        finally:
            mutex.release()

    def _dequeue(self, entry: _Waiter) -> None:
        if entry in self._ready:  # covered, not yet woken: the chain must not stop at it
            self._ready.remove(entry)
            return
        try:
            self._queue.remove(entry)
        except ValueError:
            # A wake-up took it off the queue meanwhile: it may have chosen this thread to
            # lead, so hand that on to another waiter before leaving.
            self._pass_on()
            return
        heapq.heapify(self._queue)

    def _pass_on(self) -> None:
        """A waiter leaves without leading: wake another to lead if one is left (mutex held)."""
        if not self._busy and self._failed is None:
            self._wake_covered()

    def _wake_covered(self) -> None:
        """Wake one left over to lead and start the chain through the waiters the durable LSN
        covers (mutex held)."""
        queue = self._queue
        durable = self.durable_lsn
        leader = None
        if not self._busy:
            # The lowest waiter not covered leads the next barrier: woken before the others
            # so that the fdatasync starts as soon as possible.
            for entry in queue:
                if entry[0] > durable and entry[2]:
                    leader = entry
                    break
        if leader is not None:
            queue.remove(leader)
            heapq.heapify(queue)
            leader[3].release()
        ready = self._ready
        while queue and queue[0][0] <= durable:
            ready.append(heapq.heappop(queue))
        while ready and len(self._batons) < _CHAIN_WIDTH:
            self._pass_baton()
        if self._watchers:
            self._cond.notify_all()

    def _pass_baton(self) -> None:
        """Wake the next covered waiter, which wakes another as it resumes (mutex held)."""
        if self._ready:
            entry = self._ready.popleft()
            self._batons.add(entry[1])
            entry[3].release()

    def _wake_all(self) -> None:
        queue = self._queue
        queue.extend(self._ready)
        self._queue = []
        self._ready = deque()
        self._batons.clear()
        for entry in queue:
            entry[3].release()
        self._cond.notify_all()

    def _lead(self) -> None:
        # Called with the mutex held, and returns with it held (raising too).
        try:
            self._lead_once()
        finally:
            self._mutex.acquire()

    def _lead_once(self) -> None:
        """Run one barrier and publish it: called with the mutex held, returns (or raises)
        with it released; the mutex is taken once around the barrier's end."""
        target = self.written_lsn
        self._busy = True
        mutex = self._mutex
        try:
            mutex.release()  # inside the try: an interrupt after it must not leave _busy set
            self._barrier()
        except BaseException as exc:
            self._barrier_failed(exc)
        with mutex:  # a C lock's __enter__: no signal check before _busy is cleared
            self._busy = False
            self.barriers += 1
            # A failure while the fdatasync ran may have cut the file back to writer.synced
            # (discard_unsynced), below this barrier's target: nothing it covered is durable.
            failed = self._failed
            if failed is None and target > self.durable_lsn:
                self.durable_lsn = target
            # Nobody queued or watching (a solo writer): _wake_covered would find nothing to do.
            if self._queue or self._watchers:
                self._wake_covered()
        if failed is not None:
            raise WalFailedError(failed)
        self._on_durable(target)

    def _barrier_failed(self, exc: BaseException) -> NoReturn:
        """A barrier raised ``exc``: the log fails, every waiter wakes to raise it, and so
        does the leader (called with the mutex released)."""
        with self._mutex:
            self._busy = False
            self.barriers += 1
            if self._failed is None:
                self._failed = exc
            self._wake_all()
        self._on_failure(exc)
        raise exc

    def hooks(self) -> dict[str, Callable[..., object]]:
        """What the compiled solo barrier (``format/_durable.c`` DurableWait, built by
        ``log/fastpath.py``) calls back: the mutex, the rest of ``wait_durable``, the
        barrier, its failure, the wake-up of queued threads and the publication."""

        def wait(lsn: int, resets: int) -> bool:
            return self.wait_durable(lsn, lead=True, resets=resets)

        return {
            "acquire": self._mutex.acquire,
            "release": self._mutex.release,
            "wait": wait,
            "barrier": self._barrier,
            "barrier_failed": self._barrier_failed,
            "wake": self._wake_covered,
            "publish": self._on_durable,
        }

    def flush(self) -> None:
        """Run one barrier now if anything written is not durable (the interval flusher)."""
        with self._mutex:
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
            self._watchers += 1
            try:
                while self._busy:
                    self._cond.wait()
            finally:
                self._watchers -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._mutex:
                self._busy = False
                self._wake_covered()

    def publish(self, lsn: int) -> None:
        """Declare ``lsn`` durable after a barrier the caller ran itself (seal, sync at open)."""
        with self._mutex:
            self.durable_lsn = max(self.durable_lsn, lsn)
            self._wake_covered()
        self._on_durable(lsn)
