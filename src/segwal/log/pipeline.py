"""Compression off the appending thread (``compression_threads``): a bounded, ordered pipeline.

A compressed batch append costs the codec's time (zstd: ~110 us for a 64 KiB frame on a
2-core machine) on top of plain segwal's whole append (~40 us), so done on the appending
thread it can never come near plain speed. With ``compression_threads=N`` an
``append_batch`` (and a full burst of ``buffer_bytes``) gets its LSNs and timestamp under
the log's lock, is queued, and returns; N worker threads compress queued batches
concurrently (the codecs release the GIL, in part), and whoever holds the lock writes
finished batches strictly in LSN order, each as one write of whole frames (a batch stays
all-or-nothing after a crash, as in the synchronous path).

Bounds and order:
- at most ``4 * N`` batches or ``QUEUE_BYTES`` payload bytes are in flight (one batch larger
  than that alone is allowed); a full queue blocks the appender (backpressure), which then
  compresses a queued batch itself rather than sit idle;
- everything that needs the file to hold every appended record (``sync``, ``wait_durable``,
  ``flush``, ``rotate``, ``truncate_*``, checkpoints, ``close``, unsynced reads,
  ``segments``) drains the queue first: it goes through the appender's ``settle`` or
  ``flush_buffer``, and the drain compresses what no worker has taken and waits for the
  rest, holding the lock, so nothing can slip in between;
- a failed write (ENOSPC, EIO) or compression in a worker fails the log as a failed write on
  the appending thread does (``LogState.fail``): the batches still queued are dropped (they
  were never written, let alone durable) and every later call raises ``WalFailedError``;
- a forked child never uses the pipeline: the log's fork hook fails it (``ForkedError``),
  every entry here checks that first, and ``stop`` there joins no thread. So that the child
  does not inherit a lock held by a worker (its ``close`` takes the log's lock), a fork
  waits until no worker holds the log's lock or the condition (``_before_fork``).

What it costs: about 35-50 us of CPU per 64 KiB batch for the hand-off (thread wake-ups,
the condition, GIL switches; ~77k instructions under callgrind, against ~143k for plain
segwal's whole append of that batch and ~1.8M for zstd's compression of it). So it pays only
when a core is idle: it overlaps the codec with the appending thread, it does not make the
codec cheaper. On a busy machine it is slower than compressing inline (see the pipelined
rows of ``segwal bench --codecs``).

A KeyboardInterrupt on the appending thread (which compresses and writes too) may land at
any point where the interpreter runs signal handlers: it is raised to the caller, never taken
for a failure of the log, and never loses or repeats a batch. What the thread had taken goes
back to the queue (``_repair``, from the jobs' own marks), a batch written but not yet popped
is popped unwritten when next seen (its LSNs are in the segment), a finished head nobody
writes is written by the next appender, and a burst is queued before it leaves the buffer
(tests/test_pipeline_interrupt.py tries every such point).

Lock order: the log's lock, then the pipeline's condition; a worker holds the condition
only to take or finish jobs, never while it waits for the log's lock.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from segwal.errors import RecordTooLargeError
from segwal.format.frames import Prepared
from segwal.format.layout import MAX_LSN
from segwal.log.arguments import exhausted, to_payload
from segwal.log.state import LogState, log
from segwal.storage.forklocks import QUEUE, guard

QUEUE_BYTES: Final = 32 * 2**20  # payload bytes in flight (copies of the callers' records)
# A smaller batch, with nothing queued, is compressed on the appending thread: its codec time
# (zstd: ~17 us for 64 x 100 B) is below what handing it to a worker costs (~20 us of CPU
# and a GIL hand-off), as `segwal bench --codecs` showed for the 100 B rows.
INLINE_BYTES: Final = 16 * 1024
JOBS_PER_THREAD: Final = 4  # batches in flight per worker: enough to keep every core busy

_QUEUED, _TAKEN, _DONE = 0, 1, 2


class Job:
    """One batch with its LSNs, waiting to be compressed and written."""

    __slots__ = (
        "error",
        "first",
        "items",
        "lengths",
        "owner",
        "prepared",
        "record_type",
        "size",
        "status",
        "ts",
    )

    def __init__(
        self, items: list[bytes], lengths: list[int], first: int, record_type: int, ts: int
    ) -> None:
        self.items = items
        self.lengths = lengths
        self.first = first
        self.record_type = record_type
        self.ts = ts
        self.status = _QUEUED  # _TAKEN by whoever compresses it, then _DONE (under _cond)
        self.owner = 0  # the thread that took it: an interrupted one hands it back (_repair)
        self.size = sum(lengths)
        self.prepared: Prepared | None = None
        self.error: BaseException | None = None

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1


WriteJob = Callable[[list[bytes], list[int], int, int, int, Prepared | None], None]


class CompressionPipeline:
    """The queue and worker threads of one writable log with ``compression_threads``."""

    def __init__(
        self, state: LogState, write: WriteJob, stamp: Callable[[], int], threads: int
    ) -> None:
        self._state = state
        self._buffer = state.buffer
        self._coding = state.coding
        self._write = write  # the appender's: encode and write one batch (lock held)
        self._stamp = stamp
        self._limit = JOBS_PER_THREAD * threads
        self._threads_n = threads
        self._max_record = state.config.max_record_bytes
        # ``with self._mutex`` (a C lock, whose __enter__ a signal cannot split), never
        # ``with self._cond`` (Condition.__enter__ is Python: a KeyboardInterrupt raised
        # right after its acquire leaks the lock, and every later drain hangs).
        self._mutex = guard(threading.Lock(), QUEUE)
        self._cond = threading.Condition(self._mutex)
        # In LSN order, not yet written; changed only with the log's lock and _cond held.
        self._jobs: deque[Job] = deque()
        self._todo: deque[Job] = deque()  # not yet taken by anyone (under _cond)
        self._bytes = 0
        self._stopping = False
        self._pid = os.getpid()
        # Daemons: an unclosed log never keeps the interpreter from exiting.
        self._threads = [
            threading.Thread(target=self._run, name=f"segwal-compress-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- the appending side (the appender calls these) ------------------------------------

    def takes(self, lengths: list[int]) -> bool:
        """Whether ``append_batch`` should queue this batch (else the synchronous path, which
        drains the queue first should a batch have been queued meanwhile: order holds)."""
        return bool(self._jobs) or sum(lengths) >= INLINE_BYTES

    def append_batch(self, items: list[bytes], lengths: list[int], record_type: int) -> range:
        """Give the batch its LSNs, queue it and return them (it is written later)."""
        state = self._state
        state.check_writable()  # closed, failed or forked: raised before anything waits
        if any(p.__class__ is not bytes for p in items):
            # Copies: a caller's buffer may change once the call returns.
            items = [to_payload(p, i) for i, p in enumerate(items)]
            lengths = list(map(len, items))
            largest = max(lengths, default=0)
            if largest > self._max_record:
                raise RecordTooLargeError(largest, self._max_record, index=lengths.index(largest))
        else:
            items = list(items)  # the caller's list may be reused once the call returns
        self._reserve()  # backpressure before the lock: workers can write meanwhile
        with state.lock:
            state.check_writable()
            if self._buffer.payloads:
                self.submit_burst()  # buffered single appends come first
            first = state.last_lsn + 1
            if not items:
                return range(first, first)
            last = first + len(items) - 1
            if last > MAX_LSN:
                raise exhausted()
            self._submit(Job(items, lengths, first, record_type, self._stamp()))
            counters = state.counters
            counters["appends"] += 1
            counters["records"] += len(items)
            counters["payload_bytes"] += sum(lengths)
        return range(first, last + 1)

    def next_lsn(self) -> int:
        """For a new burst of single appends: check the log can change, queue a burst of
        another type, and return the next LSN (the caller holds the lock)."""
        state = self._state
        state.check_writable()
        if self._buffer.payloads:
            self.submit_burst()
        return state.last_lsn + 1

    def submit_burst(self) -> None:
        """Queue the buffered single appends as one batch (the caller holds the lock)."""
        buffer = self._buffer
        if not buffer.payloads:
            return
        counters = self._state.counters
        n, size = len(buffer.payloads), buffer.size
        if buffer.first_lsn <= self._given():
            # Queued (or written) already: an interrupt came before the buffer was emptied
            # (and before the burst was counted: counted where it leaves the buffer).
            counters["appends"] += n
            counters["records"] += n
            counters["payload_bytes"] += size
            buffer.payloads = []
            buffer.size = 0
            return
        # Queued first, taken out after: an interrupt in between neither loses the burst
        # nor queues it twice (the check above).
        payloads = buffer.payloads
        first = buffer.first_lsn
        job = Job(payloads, list(map(len, payloads)), first, buffer.record_type, buffer.stamp)
        try:
            self._submit(job)
        finally:
            if buffer.payloads is payloads and first <= self._given():
                # Counted and taken out with no call in between (no signal check).
                counters["appends"] += n
                counters["records"] += n
                counters["payload_bytes"] += size
                buffer.payloads = []
                buffer.size = 0

    def drain(self) -> None:
        """Write the burst and every queued batch, in LSN order (the caller holds the lock).
        Raises what failed the log, if a write fails now."""
        self.submit_burst()
        while self._jobs:
            self._step()

    def _given(self) -> int:
        """The last LSN queued or written (the log's lock held)."""
        writer = self._state.writer
        written = writer.last_lsn if writer is not None else 0
        return max(self._jobs[-1].last, written) if self._jobs else written

    # -- queue ----------------------------------------------------------------------------

    def _submit(self, job: Job) -> None:
        """Queue ``job`` (the log's lock held), making room first if the queue is full."""
        while self._jobs and self._full():
            self._step()  # holding the lock: no worker can write, so help and write here
        try:
            with self._mutex:
                self._jobs.append(job)
                # state.last_lsn counts it from now on (see AppendBuffer.last_lsn).
                self._buffer.last_lsn = max(self._buffer.last_lsn, job.last)
                self._todo.append(job)
                self._bytes += job.size
                self._buffer.queued = len(self._jobs)
                self._cond.notify()
        except BaseException:  # an interrupt between two of those lines
            self._repair()
            if self._jobs and self._jobs[-1] is job:
                self._buffer.last_lsn = max(self._buffer.last_lsn, job.last)
            raise

    def _full(self) -> bool:
        return len(self._jobs) >= self._limit or self._bytes >= QUEUE_BYTES

    def _reserve(self) -> None:
        """Wait, without the log's lock, until the queue has room; compress a queued batch
        meanwhile rather than sit idle (the appending thread takes part)."""
        try:
            while True:
                with self._mutex:
                    if not self._jobs or not self._full() or self._stopping:
                        return
                    job = self._take_locked() if self._todo else None
                    if job is None and self._jobs[0].status != _DONE:
                        self._cond.wait(0.05)  # a written batch notifies
                        continue
                if job is not None:
                    self._compress(job)
                # Also a finished head nobody is writing (its compressor was interrupted).
                self._write_ready()
        except BaseException:  # KeyboardInterrupt: what this thread took goes back
            self._repair()
            raise

    def _step(self) -> None:
        """With the log's lock held: make the oldest queued batch written, compressing it
        (or another not yet taken) here or waiting for the worker that took it."""
        head = self._jobs[0]
        try:
            with self._mutex:
                mine = self._take_locked() if self._todo else None
                if mine is None:
                    while head.status == _TAKEN:
                        self._cond.wait()
            if mine is not None:
                self._compress(mine)
            self._write_heads(raise_errors=True)
        except BaseException:  # KeyboardInterrupt: what this thread took goes back
            self._repair()
            raise

    def _take_locked(self) -> Job:
        # Marked before it leaves _todo: an interrupt anywhere here leaves it findable.
        job = self._todo[0]
        job.owner = threading.get_ident()
        job.status = _TAKEN
        self._todo.popleft()
        return job

    def _repair(self) -> None:
        """After an exception (KeyboardInterrupt) at any line of this thread's taking,
        compressing, queueing or writing: the jobs it took and did not finish go back to
        be taken again, and the counts are made from the queue itself. Nothing is lost
        and nothing is written twice (``_write_heads`` skips a job already written)."""
        me = threading.get_ident()
        with self._mutex:
            for job in self._jobs:
                if job.status == _TAKEN and job.owner == me:
                    job.status = _QUEUED
            self._todo = deque(job for job in self._jobs if job.status == _QUEUED)
            self._bytes = sum(job.size for job in self._jobs)
            self._buffer.queued = len(self._jobs)
            self._cond.notify_all()

    # -- workers --------------------------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        while True:
            with self._mutex:
                while not self._todo and not self._stopping:
                    cond.wait()
                if self._stopping:
                    return
                # Several per wake-up when many wait: fewer hand-offs, same order.
                share = max(1, min(4, len(self._todo) // self._threads_n))
                taken = [self._take_locked() for _ in range(min(share, len(self._todo)))]
            for job in taken:
                try:
                    self._compress(job)
                except BaseException as exc:  # SystemExit from a codec: fails the log
                    job.error = exc
                    self._finish(job)
            try:
                self._write_ready()
            except BaseException:  # recorded in state.failure; callers see WalFailedError
                log.debug("segwal compression worker: write failed", exc_info=True)

    def _compress(self, job: Job) -> None:
        # Exception, not BaseException: a KeyboardInterrupt on the appending thread is the
        # caller's (raised, the job handed back by _repair), never the log's failure.
        try:
            job.prepared = self._coding.prepare(job.items, job.lengths)
        except Exception as exc:  # MemoryError, a codec's own error: fails the log
            job.error = exc
        self._finish(job)

    def _finish(self, job: Job) -> None:
        with self._mutex:
            job.status = _DONE
            self._cond.notify_all()

    def _write_ready(self) -> None:
        """Write the finished batches at the head of the queue, if the lock can be had."""
        try:
            if self._jobs[0].status != _DONE:
                return  # the head is not compressed yet: its compressor writes it
        except IndexError:  # written meanwhile by another thread
            return
        with self._state.lock:
            self._write_heads(raise_errors=False)

    def _write_heads(self, *, raise_errors: bool) -> None:
        """Write finished batches from the head, in order (the log's lock held)."""
        state = self._state
        jobs = self._jobs
        while jobs and jobs[0].status == _DONE:
            job = jobs[0]
            if state.closed or state.failure is not None:
                self._drop()
                if raise_errors:
                    state.check_writable()  # raises the failure
                return
            writer = state.writer
            if writer is not None and job.first <= writer.last_lsn:
                # Written already: an interrupt came between its write and this pop.
                self._pop_head(job)
                continue
            try:
                if job.error is not None:
                    state.fail(job.error)  # a codec's error (a failed write fails by itself)
                    raise job.error
                self._write(
                    job.items, job.lengths, job.first, job.record_type, job.ts, job.prepared
                )
            except BaseException as exc:
                if state.failure is None:
                    if not isinstance(exc, Exception):
                        # An interrupt before the write (the job is written when next seen)
                        # or after it (popped when next seen, by its LSNs): the caller's.
                        raise
                    state.fail(exc)  # encoding failed: the log fails as on a failed write
                self._drop()
                if raise_errors or not isinstance(exc, Exception):
                    raise  # a KeyboardInterrupt is the caller's, whichever path wrote
                return
            self._pop_head(job)
        if not jobs and not self._buffer.payloads:
            self._buffer.last_lsn = 0  # every LSN given out is written (AppendBuffer)

    def _pop_head(self, job: Job) -> None:
        with self._mutex:
            self._jobs.popleft()
            self._bytes -= job.size
            self._buffer.queued = len(self._jobs)
            self._cond.notify_all()

    def _drop(self) -> None:
        """The log failed or closed: the queued batches are never written."""
        with self._mutex:
            self._jobs.clear()
            self._todo.clear()
            self._bytes = 0
            self._buffer.queued = 0
            self._cond.notify_all()
        if not self._buffer.payloads:
            self._buffer.last_lsn = 0

    # -- closing --------------------------------------------------------------------------

    def stop(self) -> None:
        """End the workers (at close, after the drain; queued batches of a failed log are
        dropped). In a forked child the threads do not exist: nothing to do."""
        if os.getpid() != self._pid:
            return
        with self._mutex:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        with self._state.lock:
            self._drop()
