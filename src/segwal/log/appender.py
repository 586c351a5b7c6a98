"""The write side of an open log: appends, the append buffer's flushes, rotation, barriers.

The appender owns the active segment's writer (``LogState.writer``, seen by readers and
maintenance). Appends take the log's lock to assign LSNs and write (a batch is compressed
before); the group commit shares durability and calls back into ``barrier`` here. After
any failed write or barrier the log fails closed."""

from __future__ import annotations

import posixpath
import types
from collections.abc import Callable
from time import perf_counter, time_ns
from typing import Final

from segwal.errors import ForkedError, RecordTooLargeError, StorageError
from segwal.events import Synced
from segwal.format.encoder import encode_record, write_record
from segwal.format.features import HEADER_PREALLOCATED, OPAQUE_OVERHEAD
from segwal.format.layout import FRAME_HEAD_SIZE, MAX_LSN
from segwal.format.meta import Closed
from segwal.log import fastpath
from segwal.log.arguments import MAX_TYPE, check_type, exhausted, to_payload
from segwal.log.batches import BatchAppends
from segwal.log.pipeline import CompressionPipeline
from segwal.log.publisher import Publisher
from segwal.log.rotation import Rotation
from segwal.log.state import LogState
from segwal.storage.fileio import FileHandle, OsFile
from segwal.storage.meta import store as store_meta
from segwal.storage.segment import SegmentWriter
from segwal.storage.tail import save_closed_tail
from segwal.types import SegmentInfo

# The fast path's writer before any append: matches no writer, so the first goes the long way.
_NOBODY: Final = object()
# The fast appends' tally: count << 64 | frame bytes (a log writes fewer than 2**64 bytes).
_TALLY_SHIFT: Final = 64
_TALLY_ONE: Final = 1 << _TALLY_SHIFT
_TALLY_BYTES: Final = _TALLY_ONE - 1
_MAX_TS: Final = (1 << 64) - 1  # a frame's timestamp field holds no more
_DEFAULT_CLOCK: Final = fastpath.DEFAULT_CLOCK
_RECORD_OVERHEAD: Final = fastpath.RECORD_OVERHEAD


class Appender(BatchAppends):
    """Appends, rotation and barriers of one writable log."""

    def __init__(
        self, state: LogState, lock_handle: FileHandle, after_seal: Callable[[], None]
    ) -> None:
        self._state = state
        self._config = state.config
        self._lock_handle = lock_handle
        self.rotation = Rotation(state, after_seal)
        self._max_record_bytes = state.config.max_record_bytes
        # LOCK's publications (log/publisher.py): the group commit calls publish per barrier.
        self.publisher = Publisher(state, lock_handle)
        self.publish = self.publisher.publish
        self.announce = self.publisher.announce
        self.republish = self.publisher.republish
        self._last_ts = 0
        # compression_threads: batches compressed off the appending thread (log/pipeline.py)
        self.pipeline: CompressionPipeline | None = None
        threads = state.config.compression_threads
        if threads and state.coding.compressor is not None:
            self.pipeline = CompressionPipeline(state, self.write_queued, self.stamp, threads)
        # The single-append fast path (see _fast_append); _NOBODY until an append sets it.
        self._fast_writer: object = _NOBODY
        self._fast_seed = 0
        self._fast_first = 0  # the writer's first LSN: its first record goes the long way
        self._fast_room = 0  # the segment bytes a frame may end at, the seal's room kept
        self._fast_max = 0  # the largest payload the writer's header and config both allow
        # The fast appends, which state.counters and state.io leave out: their number times
        # _TALLY_ONE plus their frames' bytes, so that a reader gets both in one read.
        self._tally = 0
        state.tally = self.tally
        self._fast_fd = -1  # the writer's descriptor for write_record; -1: encode, then pwrite
        self._fast_clock = self._config.clock is _DEFAULT_CLOCK
        self._sync_always = self._config.sync == "always"
        # The compiled fast path (log/fastpath.py): the same appends in one C call. It
        # replaces append on this instance; what it does not take goes to the Python append
        # below, which then takes the general path (_fast_writer stays _NOBODY).
        # sync="always": what an append waits through for its barrier (log/fastpath.py
        # durable_wait: the compiled DurableWait, or the group commit's wait_durable).
        self._durable = fastpath.durable_wait(state, self.publisher) if self._sync_always else None
        self._fast = fastpath.build(state, types.MethodType(Appender.append, self), self._durable)
        if self._fast is not None:
            self.append = self._fast.append  # type: ignore[method-assign]
            state.tally = self._fast.tally

    # -- appending ------------------------------------------------------------------------

    def append(self, payload: bytes | bytearray | memoryview, type: int = 0) -> int:
        state = self._state
        # _NOBODY: no writer was ever eligible (a buffered, compressed or encrypted log...):
        # those go straight to the general path, without taking the lock twice.
        if (
            payload.__class__ is bytes
            and type.__class__ is int
            and self._fast_writer is not _NOBODY
        ):
            # The fast path: one record, one encode, one write, when nothing special is due.
            # Eligible: a writer _eligible approved, still the active one (rotation, reopen
            # and close replace or drop it), a log neither failed (a failed write, a fork)
            # nor closed, a payload its header and the segment's room allow, and not the
            # segment's first record (that one sets min_ts). Anything else, error included,
            # takes the general path, which raises, rotates, buffers or compresses. One
            # function, no helper: on this path every Python call shows in the rate.
            written = 0
            with state.lock:
                writer = state.writer
                size = len(payload)
                offset = writer.offset if writer is self._fast_writer else -1  # type: ignore[union-attr]
                if (
                    offset >= 0
                    and state.failure is None
                    and not state.closed
                    and 0 <= type <= MAX_TYPE
                    and size <= self._fast_max
                    and offset + size <= self._fast_room
                ):
                    assert writer is not None
                    lsn = writer.last_lsn + 1
                    if self._fast_first < lsn <= MAX_LSN:
                        ts = time_ns() // 1000 if self._fast_clock else self._config.now_us()
                        if ts < self._last_ts:
                            ts = self._last_ts  # never decreasing, as stamp() keeps them
                        else:
                            self._last_ts = ts
                        # A custom clock is Python code: if it re-entered the log (an
                        # append, a rotation, a close), what was read above is stale, and the
                        # general path starts over (as FastAppender does).
                        if self._fast_clock or (
                            state.writer is writer
                            and writer.offset == offset
                            and writer.last_lsn == lsn - 1
                            and state.failure is None
                            and not state.closed
                        ):
                            commit = state.commit
                            try:
                                if self._fast_fd >= 0 and write_record is not None:
                                    try:
                                        write_record(
                                            self._fast_fd,
                                            offset,
                                            self._fast_seed,
                                            lsn,
                                            type,
                                            ts,
                                            commit.durable_lsn,
                                            payload,
                                        )
                                    except OSError as exc:
                                        raise StorageError("write", writer.path, exc) from exc
                                else:
                                    frame = encode_record(
                                        self._fast_seed, lsn, type, ts, commit.durable_lsn, payload
                                    )
                                    writer.handle.pwrite(frame, offset)
                            except BaseException as exc:
                                state.fail(exc)
                                writer.discard_unsynced()
                                raise
                            # What SegmentWriter.write notes after its pwrite (the segment is not
                            # empty, so min_ts stays), and the index's own test inlined: a call
                            # per append for one entry per 4 KiB costs more than the test.
                            size += _RECORD_OVERHEAD
                            index = writer.index
                            if offset >= index._next:
                                index.add(lsn, offset, ts)
                            writer.offset = offset + size
                            writer.last_lsn = lsn
                            writer.max_ts = ts
                            # GroupCommit.wrote inlined likewise: followers wait only with sync
                            # "always" or wait_durable; the store alone is what the rest need.
                            commit.written_lsn = lsn
                            if commit._watchers:
                                commit.wrote(lsn)
                            # Counted in one int, which LogState adds to its counters when they
                            # are read: five dict updates cost a quarter of this path.
                            self._tally += _TALLY_ONE + size
                            if not self._sync_always:
                                return lsn
                            written = lsn
            if written:  # sync="always": durable before it returns, outside the lock
                commit.wait_durable(written, lead=True)
                return written
        return self._append(payload, type)

    def tally(self) -> tuple[int, int]:
        """The fast appends so far: their number and their frames' bytes, one consistent
        pair (one int read, no lock: publishing reads it under the publish lock)."""
        if self._fast is not None:
            return self._fast.tally()
        tally = self._tally
        return tally >> _TALLY_SHIFT, tally & _TALLY_BYTES

    def _eligible(self, writer: SegmentWriter) -> None:
        """After an append on the general path: may the next ones to ``writer`` go fast?"""
        state = self._state
        config = self._config
        # A preallocated segment goes fast within its allocation (fastpath.room), and the
        # append that passes it takes SegmentWriter.write, which grows it and arms again.
        # Direct-I/O segments go fast in the compiled path only (whole aligned blocks,
        # format/_direct.c); the Python fast path leaves them to SegmentWriter.write.
        plain = (
            writer.encoder is None
            and not state.buffer.limit
            and state.coding.compressor is None
            and config.max_segment_age is None
        )
        if plain and self._fast is not None:
            fastpath.arm(self._fast, state, writer, self._max_record_bytes)
        elif plain and writer.direct is None:
            handle = writer.handle
            self._fast_writer = writer
            self._fast_seed = writer.header.seed
            self._fast_first = writer.header.first_lsn
            self._fast_room = fastpath.room(writer, config.segment_bytes)
            self._fast_max = min(self._max_record_bytes, writer.header.max_record_bytes)
            # A real file and the compiled encoder: encode and pwrite in one C call.
            self._fast_fd = (
                handle.fd if write_record is not None and isinstance(handle, OsFile) else -1
            )
        elif self._fast is not None:
            self._fast.disarm()
        else:
            self._fast_writer = _NOBODY

    def _append(self, payload: bytes | bytearray | memoryview, type: int) -> int:
        """The general single append: checks, buffering, rotation, v2 frames."""
        state = self._state
        # bytes, never a mutable buffer: a buffered payload must not change under us.
        data = payload if payload.__class__ is bytes else to_payload(payload)
        if type.__class__ is not int or not 0 <= type <= MAX_TYPE:
            check_type(type)
        size = len(data)
        if size > self._max_record_bytes:
            raise RecordTooLargeError(size, self._max_record_bytes)
        buffer = state.buffer
        prepared = None
        if state.coding.compressor is not None and not buffer.limit:
            prepared = state.coding.prepare([data], [size])  # compressed outside the lock
        if buffer.limit:
            with state.lock:
                # The hot path: a burst of one type on a healthy log (buffered records mean
                # open and writable: close and a failed write leave none).
                if buffer.payloads and type == buffer.record_type and state.failure is None:
                    lsn = buffer.last_lsn + 1
                    if lsn > MAX_LSN:
                        raise exhausted()
                    if buffer.add(data, size):
                        self._burst_full()
                    return lsn
                return self._start_burst(data, type)
        with state.lock:
            writer = self.settle()
            lsn = writer.last_lsn + 1
            if lsn > MAX_LSN:
                raise exhausted()
            ts = self.stamp()
            frame_len = FRAME_HEAD_SIZE + 4 + size + (OPAQUE_OVERHEAD if writer.encoder else 0)
            if self.rotation.due(writer, frame_len, size, ts):
                writer = self.rotation.for_append(writer, frame_len, size, ts)
            if writer.encoder is None or writer.encoder.stores_raw(size):
                frame = encode_record(
                    writer.header.seed, lsn, type, ts, state.commit.durable_lsn, data
                )
            else:
                frame = self._encode_batch(writer, lsn, type, ts, [data], [size], prepared)
            self._write(writer, frame, lsn, ts)
            counters = state.counters
            counters["appends"] += 1
            counters["records"] += 1
            counters["payload_bytes"] += size
            self._eligible(writer)
        if self._durable is not None:
            self._durable(lsn)
        return lsn

    def _start_burst(self, data: bytes, record_type: int) -> int:
        """Start a burst of buffered appends (the caller holds the lock)."""
        # settle raises what is wrong, and writes a burst of another type first: a frame
        # holds records of one type.
        # With the pipeline, that burst is queued rather than waited for.
        pipeline = self.pipeline
        lsn = pipeline.next_lsn() if pipeline is not None else self.settle().last_lsn + 1
        if lsn > MAX_LSN:
            raise exhausted()
        if self._state.buffer.start(data, lsn, record_type, self.stamp()):
            self._burst_full()
        return lsn

    def _burst_full(self) -> None:
        if self.pipeline is not None:
            self.pipeline.submit_burst()  # queued: compressed and written off this thread
        else:
            self.flush_buffer()

    def settle(self) -> SegmentWriter:
        """Check the log can change, then write buffered records: whatever comes next (a
        batch, a barrier, a rotation, a truncation) must find them in the file, in order."""
        state = self._state
        writer = state.check_writable()
        if state.buffer.pending:
            self.flush_buffer()
            writer = state.check_writable()
        return writer

    def flush_buffer(self) -> None:
        """Write the buffered appends as one batch (all or nothing after a crash)."""
        state = self._state
        with state.lock:
            if self.pipeline is not None:
                self.pipeline.drain()  # the burst and every queued batch, in LSN order
                return
            buffer = state.buffer
            if not buffer.payloads:
                return
            burst = buffer.take()
            try:
                writer = state.check_writable()  # a barrier may have failed meanwhile
                items = burst.payloads
                lengths = list(map(len, items))
                first, record_type, ts = burst.first_lsn, burst.record_type, burst.timestamp_us
                data = self._encode_batch(writer, first, record_type, ts, items, lengths)
                self._write_batch(writer, data, first, record_type, ts, items, lengths)
            finally:
                # A failed write fails the log; the records it lost were never durable.
                buffer.written()
            counters = state.counters
            counters["appends"] += len(items)
            counters["records"] += len(items)
            counters["payload_bytes"] += burst.size

    def stamp(self) -> int:
        # Timestamps never decrease within a log, even when the clock steps back; the
        # compiled fast path keeps the last one itself. With WalConfig's own clock, time_ns
        # is read here (no two calls through the config).
        now = time_ns() // 1000 if self._fast_clock else self._config.now_us()
        fast = self._fast
        last = fast.last_ts if fast is not None else self._last_ts
        now = max(now, last)
        if now > _MAX_TS:
            return now  # unencodable: the encoder raises its ValueError, and nothing is kept
        if fast is not None:
            fast.last_ts = now
        self._last_ts = now
        return now

    def resume_stamps(self, last_ts: int) -> None:
        if self._fast is not None:
            self._fast.last_ts = last_ts
        self._last_ts = last_ts

    def _write(self, writer: SegmentWriter, data: bytes | bytearray, last: int, ts: int) -> None:
        state = self._state
        try:
            writer.write(data, last, ts)
        except BaseException as exc:
            state.fail(exc)
            writer.discard_unsynced()
            raise
        io = state.io
        io["written_bytes"] += len(data)
        io["writes"] += 1
        # GroupCommit.wrote inlined, as in the fast path: the store is what most need.
        commit = state.commit
        commit.written_lsn = last
        if commit._watchers:
            commit.wrote(last)

    # -- rotation -------------------------------------------------------------------------

    def rotate(self) -> SegmentInfo | None:
        with self._state.lock:
            self.settle()
            return self.rotate_locked("forced")

    def rotate_locked(self, reason: str) -> SegmentInfo | None:
        return self.rotation.rotate_locked(reason)

    # -- durability -----------------------------------------------------------------------

    def barrier(self) -> None:
        """The group commit's data barrier: fdatasync the active segment."""
        state = self._state
        writer = state.writer
        assert writer is not None
        # The segment's fdatasync (once per durable append, so no SegmentWriter method in
        # between): what the barrier covers is what was written before it started.
        end = writer.offset
        started = perf_counter()
        writer.handle.sync("append.sync")
        seconds = perf_counter() - started
        writer.synced = max(writer.synced, end)
        state.io["fsyncs"] += 1
        state.telemetry.fsynced(seconds)  # the histogram, and a warning when slow
        if state._observers:  # LogState.observed without its call
            state.emit(Synced(site="append.sync", seconds=seconds))

    def barrier_failed(self, exc: BaseException) -> None:
        state = self._state
        state.fail(exc)
        with state.lock:
            if state.writer is not None:
                state.writer.discard_unsynced()

    def ensure_durable(self, lsn: int) -> None:
        commit = self._state.commit
        if commit.durable_lsn < lsn:
            commit.wait_durable(lsn, lead=True)

    def sync(self) -> int:
        state = self._state
        with state.lock:
            self.settle()
        state.commit.wait_durable(state.commit.written_lsn, lead=True)
        return state.commit.durable_lsn

    def wait_durable(self, lsn: int, timeout: float | None) -> bool:
        state = self._state
        if isinstance(state.failure, ForkedError):
            raise state.failure  # a forked child runs no barrier on its parent's files
        if lsn > state.commit.written_lsn and state.buffer.pending:
            self.flush_buffer()  # the buffered appends it waits for
        lead = self._config.sync != "interval"
        return state.commit.wait_durable(lsn, lead=lead, timeout=timeout)

    # -- closing --------------------------------------------------------------------------

    def _mark_clean(self, writer: SegmentWriter) -> None:
        """Record in META how far the active segment is durable at a clean close, so that
        recovery calls damage before that point bit rot (raised), never a torn tail (cut),
        with the facts the next open would otherwise scan the segment for (its time range;
        its index goes to a sidecar bound to the mark: storage/tail.py save_closed_tail).

        A failure fails the close like any failed write or barrier (everything appended is
        durable already; what is lost is only the mark, so recovery would know less).
        """
        state = self._state
        io = state.io
        if not (io["writes"] or io["created"] or io["meta_stores"] or self.tally()[0]):
            return  # this session changed nothing: an open and a close leave the files alone
        closed = Closed(
            segment=posixpath.basename(writer.path), end=writer.offset, lsn=writer.last_lsn
        )
        padded = writer.header.flags & HEADER_PREALLOCATED  # never has facts: always scanned
        if state.meta.closed == closed and (state.meta.tail is not None or padded):
            return  # the mark (and its sidecar) describe the segment as it still is
        try:
            # The sidecar before META: a META naming a token whose sidecar a crash lost
            # only makes the next open scan.
            tail = save_closed_tail(state.fs, writer, state.meta.rewinds)
            meta = state.meta.with_(closed=closed, tail=tail)
            store_meta(state.fs, state.path, meta)
        except BaseException as exc:
            state.fail(exc)
            raise
        state.meta = meta

    def close(self, flush_error: BaseException | None) -> None:
        """The last barrier, then the files and the lock go (the log is marked closed)."""
        state = self._state
        writer = state.writer
        handle = self._lock_handle
        try:
            if flush_error is not None:
                raise flush_error
            if writer is not None and state.failure is None:
                state.commit.wait_durable(state.commit.written_lsn, lead=True)
                self._mark_clean(writer)
                self.publisher.closed(state.commit.durable_lsn)
        finally:
            if self.pipeline is not None:
                self.pipeline.stop()  # drained above, or dropped with a failed log
            if writer is not None:
                writer.close()
            handle.close()
