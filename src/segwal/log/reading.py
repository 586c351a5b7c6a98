"""Reading the log: ``read``, ``replay``, ``read_batch``, ``lsn_at`` and ``follow``.

A reader takes a snapshot (the catalog's sealed generation, the active segment as far as
it is written, the LSN bounds and the rewind count) under the log's lock, then streams
without it. It holds each segment it reads in the catalog, so a segment retention retires
meanwhile is deleted only when the reader lets go. Memory stays bounded by one read window.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from time import monotonic, sleep
from typing import Any, TypeVar, overload

from segwal.errors import (
    ChecksumError,
    CorruptionError,
    NotFoundError,
    ReaderFellBehindError,
    StorageError,
)
from segwal.format.layout import HEADER_SIZE, FormatError
from segwal.format.records import decode_payloads
from segwal.format.scanner import Status
from segwal.log import arguments
from segwal.log.catalog import Part, Sealed, parts_for, tail_part, writer_part
from segwal.log.handles import Loan
from segwal.log.state import LogState
from segwal.storage.fileio import Buffer
from segwal.storage.framereads import (
    FIRST_CHUNK,
    READ_CHUNK,
    FrameDecoder,
    PlainFrame,
    decode_frames,
    iter_frames,
    read_frame,
    record_iterator,
)
from segwal.storage.index import SparseIndex
from segwal.storage.index import load as load_index
from segwal.types import Batch, FrameRecords, Record


@dataclass(frozen=True, slots=True)
class Snapshot:
    sealed: Sealed
    active: Part | None  # the writer's segment as far as written, or a readonly tail
    first: int
    last: int
    limit: int  # the last LSN the reader may see (durable, unless it asked otherwise)
    durable: int
    rewinds: int  # the log's truncate_after count when the snapshot was taken


T = TypeVar("T")


def _records_through(records: Iterator[Record], lsn: int) -> tuple[Iterator[Record] | None, bool]:
    """A frame's records up to ``lsn``, and whether that is all of them."""
    every = list(records)
    kept = [r for r in every if r.lsn <= lsn]
    return (iter(kept) if kept else None), len(kept) == len(every)


def _frame_records(
    buf: Buffer,
    table: int,
    count: int,
    end: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    skip: int,
    stop: int,
) -> FrameRecords:
    """``replay_frames``' item: records ``skip..stop-1`` of a frame, as payloads."""
    payloads = decode_payloads(buf, table, count, end, skip, stop)
    return FrameRecords(first_lsn + skip, record_type, timestamp_us, payloads)


def _frame_through(frame: FrameRecords, lsn: int) -> tuple[FrameRecords | None, bool]:
    """A frame's payloads up to ``lsn``, and whether that is all of them."""
    keep = max(0, min(len(frame.payloads), lsn - frame.first_lsn + 1))
    kept = frame._replace(payloads=frame.payloads[:keep]) if keep else None
    return kept, keep == len(frame.payloads)


class Reader:
    """The read side of one open log."""

    def __init__(
        self,
        state: LogState,
        *,
        flush_buffer: Callable[[], None] | None,
        refresh_view: Callable[[], None] | None,
    ) -> None:
        self._state = state
        self._fs = state.fs
        self._readonly = state.config.readonly
        self._flush_buffer = flush_buffer  # writable logs: write buffered records first
        self._refresh_view = refresh_view  # readonly logs: look at the directory again
        self._frames = state.catalog.frames  # checked frames for point reads

    def _snapshot(self, unsynced: bool, *, looked: bool = False) -> Snapshot:
        state = self._state
        state.check_open()
        if self._refresh_view is not None and not looked:
            self._refresh_view()
        with state.lock:
            if unsynced and state.buffer.pending and state.failure is None:
                assert self._flush_buffer is not None
                self._flush_buffer()  # unsynced readers see every appended record
            writer = state.writer
            if writer is not None:
                active: Part | None = writer_part(writer)
            elif state.catalog.tail is not None:
                active = tail_part(state.catalog.tail)
            else:
                active = None
            first, last = state.first_lsn, state.last_lsn
            sealed = state.catalog.sealed
        durable = state.commit.durable_lsn
        limit = last if unsynced else min(last, durable)
        return Snapshot(sealed, active, first, last, limit, durable, state.rewinds)

    def read(self, lsn: int, *, unsynced: bool = False) -> Record:
        """``Wal.read``."""
        if lsn.__class__ is not int:
            lsn = arguments.lsn(lsn)
        if unsynced is not False:
            unsynced = unsynced is True or arguments.flag(unsynced, "unsynced")
        state = self._state
        looked = False
        if self._frames.limit and not state.closed:
            # A hit, without a snapshot or the log's lock: a cached frame is durable (so
            # within the read limit, whatever the flags), its LSNs name the same bytes at
            # this rewind count, and the count is compared again after the lookup, as a
            # stream does per frame. One bisect, whatever the number of segments.
            if self._refresh_view is not None:
                self._refresh_view()
                looked = True  # a readonly view looked at the directory for this read
            rewinds = state.rewinds
            record = self._frames.record(lsn, rewinds)
            if (
                record is not None
                and lsn >= state.meta.first_lsn  # below: a checkpoint hides it
                and (state.rewinds == rewinds or state.rewound_below(rewinds, lsn + 1) is None)
            ):
                return record
        snap = self._snapshot(unsynced, looked=looked)
        first, last = snap.first, snap.last
        if not first <= lsn <= snap.limit:
            if first <= lsn <= last:
                reason = (
                    f"LSN {lsn} is not durable yet (durable LSN {snap.durable}); "
                    "call sync() first or pass unsynced=True"
                )
            elif lsn < first:
                reason = f"LSN {lsn} is no longer in the log, which now starts at LSN {first}"
            else:
                reason = f"LSN {lsn} is past the end of the log (last LSN {last})"
            raise NotFoundError(reason, lsn=lsn, first_lsn=first, last_lsn=last)
        chosen = parts_for(snap.sealed, snap.active, lsn, lsn)
        if chosen and chosen[0].token is not None and self._frames.limit:
            return self._cached(snap, chosen[0], lsn)
        for record in chain.from_iterable(self._stream(snap, lsn, lsn)):
            return record
        raise NotFoundError(
            f"LSN {lsn} is no longer in the log", lsn=lsn, first_lsn=first, last_lsn=last
        )

    def _cached(self, snap: Snapshot, part: Part, lsn: int) -> Record:
        """A point read through the frame cache: the frame holding ``lsn`` is read and
        checked once, kept when it is durable, and later reads slice it in memory."""
        state = self._state
        cache = self._frames
        cached = cache.find(lsn, snap.rewinds)
        if cached is not None:
            record = cached.record(lsn)
        else:
            cache.misses += 1
            frame = self._load(part, snap, lsn)
            # Only durable frames: bytes past the last barrier may be cut after a failed one.
            if frame.first_lsn + frame.count - 1 <= snap.durable:
                record = cache.add(part.token, snap.rewinds, frame).record(lsn)
            else:
                try:
                    record = frame.record(lsn)
                except FormatError as exc:  # checked when read; a place, should it not be
                    raise CorruptionError(
                        exc.reason, path=part.path, offset=frame.offset, lsn=lsn
                    ) from None
        if state.rewinds != snap.rewinds and state.rewound_below(snap.rewinds, lsn + 1) is not None:
            # A rewind since the snapshot replaced this LSN: the bytes may be the old ones.
            raise _rewound(state, snap.rewinds, lsn, lsn)
        return record

    def _load(self, part: Part, snap: Snapshot, lsn: int) -> PlainFrame:
        """The checked frame holding ``lsn``, read from the part's file."""
        state = self._state
        catalog = state.catalog
        catalog.acquire([part])
        try:
            if state.rewinds != snap.rewinds:
                raise _rewound(state, snap.rewinds, lsn, lsn)
            loan = self._take(part, lsn)
            try:
                first, offset, stop = self._index_of(part).seek_span(lsn, part.first_lsn, part.end)
                return read_frame(
                    loan.handle,
                    part.header,
                    start=offset,
                    end=part.end,
                    first_lsn=first,
                    lsn=lsn,
                    coding=state.coding,
                    # Up to the next indexed batch, in one pread (a batch of 1,000 x 100 B
                    # is one 100 KB frame); a longer span is read as a stream reads it.
                    first_chunk=min(stop, part.end) - offset,
                )
            except CorruptionError:
                state.telemetry.corruption()  # counted for segwal_corruption_errors_total
                raise
            finally:
                catalog.handles.give(loan)
        finally:
            catalog.release(part.path)

    def _take(self, part: Part, lsn: int) -> Loan:
        """A read handle on the part's file; a reader fell behind when it is gone."""
        state = self._state
        try:
            return state.catalog.handles.take(part.path, part.token)
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise ReaderFellBehindError(
                f"segment {part.path} was removed while a reader needed LSN {lsn}",
                lsn=lsn,
                first_lsn=state.first_lsn,
            ) from exc

    def replay(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, unsynced: bool = False
    ) -> Iterator[Record]:
        """``Wal.replay``: the range is fixed when it is called."""
        from_lsn = arguments.optional_lsn(from_lsn, "from_lsn")
        to_lsn = arguments.optional_lsn(to_lsn, "to_lsn")
        snap = self._snapshot(arguments.flag(unsynced, "unsynced"))
        start = snap.first if from_lsn is None else max(from_lsn, snap.first)
        stop = snap.limit if to_lsn is None else min(to_lsn, snap.limit)
        return chain.from_iterable(self._stream(snap, start, stop, bulk=True))

    def replay_frames(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, unsynced: bool = False
    ) -> Iterator[FrameRecords]:
        """``Wal.replay_frames``: ``replay``'s records, bounds and checks, one item per
        stored frame (its payloads, cut to the range), without a ``Record`` per payload."""
        from_lsn = arguments.optional_lsn(from_lsn, "from_lsn")
        to_lsn = arguments.optional_lsn(to_lsn, "to_lsn")
        snap = self._snapshot(arguments.flag(unsynced, "unsynced"))
        start = snap.first if from_lsn is None else max(from_lsn, snap.first)
        stop = snap.limit if to_lsn is None else min(to_lsn, snap.limit)
        return self._stream(snap, start, stop, _frame_records, _frame_through, bulk=True)

    def read_batch(
        self,
        from_lsn: int,
        *,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        unsynced: bool = False,
    ) -> Batch:
        """``Wal.read_batch``: seeks through the sparse index."""
        from_lsn = arguments.lsn(from_lsn, "from_lsn")
        max_records = arguments.at_least_one(max_records, "max_records")
        max_bytes = arguments.at_least_one(max_bytes, "max_bytes")
        snap = self._snapshot(arguments.flag(unsynced, "unsynced"))
        if from_lsn < snap.first:
            raise NotFoundError(
                f"LSN {from_lsn} is no longer in the log, which now starts at LSN {snap.first}",
                lsn=from_lsn,
                first_lsn=snap.first,
                last_lsn=snap.last,
            )
        records: list[Record] = []
        size = 0
        for record in chain.from_iterable(self._stream(snap, from_lsn, snap.limit)):
            length = len(record.payload)
            if records and (len(records) >= max_records or size + length > max_bytes):
                break
            records.append(record)
            size += length
        next_lsn = records[-1].lsn + 1 if records else max(from_lsn, snap.first)
        return Batch(records, next_lsn, next_lsn <= snap.limit)

    def lsn_at(self, timestamp_us: int, *, unsynced: bool = False) -> int:
        """``Wal.lsn_at``. Append timestamps never decrease within a log, so this is a binary
        search: segments by time range, then the sparse index, then one index interval."""
        timestamp_us = arguments.integer(timestamp_us, "timestamp_us")
        snap = self._snapshot(arguments.flag(unsynced, "unsynced"))
        # One bisect over the sealed segments (a log of 4,000 costs what one of 200 does).
        sealed = snap.sealed.parts
        start = snap.sealed.from_time(timestamp_us)
        later = (sealed[i] for i in range(start, len(sealed)))
        for part in chain(later, [snap.active] if snap.active is not None else []):
            if part.last_lsn < part.first_lsn or part.max_ts < timestamp_us:
                continue
            _first, offset = self._index_of(part).seek_time(timestamp_us, part.first_lsn)
            found = self._first_at(part, offset, timestamp_us)
            if found is None and offset != HEADER_SIZE:
                found = self._first_at(part, HEADER_SIZE, timestamp_us)  # distrust the index
            if found is not None:
                return max(min(found, snap.limit + 1), snap.first)
        return snap.limit + 1

    def _first_at(self, part: Part, offset: int, timestamp_us: int) -> int | None:
        """The first LSN stamped at or after ``timestamp_us`` in frames from ``offset``; None
        when the frame at ``offset`` is already that late (a seek the index got wrong)."""
        handle = self._fs.open_read(part.path)
        try:
            for ref in iter_frames(handle, part.header, offset, part.end):
                frame = ref.verdict.frame
                if frame is None:
                    if ref.verdict.status is Status.END:
                        return None
                    raise ChecksumError(
                        ref.verdict.reason, path=part.path, offset=ref.offset, lsn=None
                    )
                if frame.timestamp_us >= timestamp_us:
                    if ref.offset == offset and offset != HEADER_SIZE:
                        return None
                    return int(frame.first_lsn)
        finally:
            handle.close()
        return None

    def follow(
        self,
        from_lsn: int | None = None,
        *,
        timeout: float | None = None,
        unsynced: bool = False,
    ) -> Iterator[Record]:
        """``Wal.follow``: checks its arguments now, reads when iterated."""
        self._state.check_open()
        from_lsn = arguments.optional_lsn(from_lsn, "from_lsn")
        seconds = arguments.timeout(timeout)
        unsynced = arguments.flag(unsynced, "unsynced")
        return self._follow(from_lsn, seconds, unsynced, self._state.rewinds)

    def _follow(
        self, from_lsn: int | None, timeout: float | None, unsynced: bool, seen: int
    ) -> Iterator[Record]:
        state = self._state
        next_lsn = state.first_lsn if from_lsn is None else from_lsn
        while True:
            if state.closed:
                return
            snap = self._snapshot(unsynced)
            if snap.rewinds != seen:
                # A rewind below what this reader yielded replaced those records: going on
                # at the next LSN would silently mix two histories.
                lowest = state.rewound_below(seen, next_lsn - 1)
                if lowest is not None:
                    raise ReaderFellBehindError(
                        f"the log was rewound to LSN {lowest} (truncate_after) after this "
                        f"reader had read up to LSN {next_lsn - 1}; records from LSN "
                        f"{lowest + 1} now hold other data",
                        lsn=lowest + 1,
                        first_lsn=snap.first,
                    )
                seen = snap.rewinds
            if next_lsn < snap.first:
                raise ReaderFellBehindError(
                    f"LSN {next_lsn} is no longer in the log, which now starts at LSN {snap.first}",
                    lsn=next_lsn,
                    first_lsn=snap.first,
                )
            if next_lsn <= snap.limit:
                for record in chain.from_iterable(self._stream(snap, next_lsn, snap.limit)):
                    yield record
                    next_lsn = record.lsn + 1
                continue
            if not self._wait_beyond(next_lsn - 1, timeout, unsynced):
                return

    def _wait_beyond(self, lsn: int, timeout: float | None, unsynced: bool) -> bool:
        """Wait for a record after ``lsn``: woken by the writer in its own process, polling
        the published durable LSN from another one."""
        state = self._state
        if self._refresh_view is None:
            return state.commit.wait_beyond(lsn, written=unsynced, timeout=timeout)
        deadline = None if timeout is None else monotonic() + timeout
        pause = 0.0005
        while not state.closed:
            self._refresh_view()
            limit = state.last_lsn if unsynced else min(state.last_lsn, state.commit.durable_lsn)
            if limit > lsn:
                return True
            if deadline is not None and monotonic() >= deadline:
                return False
            wait = pause if deadline is None else min(pause, max(0.0, deadline - monotonic()))
            sleep(wait)
            pause = min(pause * 2, 0.02)
        return False

    @overload
    def _stream(
        self, snap: Snapshot, start: int, stop: int, *, bulk: bool = False
    ) -> Iterator[Iterator[Record]]: ...

    @overload
    def _stream(
        self,
        snap: Snapshot,
        start: int,
        stop: int,
        decode: FrameDecoder[T],
        through: Callable[[T, int], tuple[T | None, bool]],
        *,
        bulk: bool = False,
    ) -> Iterator[T]: ...

    def _stream(
        self,
        snap: Snapshot,
        start: int,
        stop: int,
        decode: FrameDecoder[Any] = record_iterator,
        through: Callable[[Any, int], tuple[Any, bool]] = _records_through,
        *,
        bulk: bool = False,
    ) -> Iterator[Any]:
        """One item per frame holding LSNs ``start..stop``, as ``decode`` builds it;
        ``through(item, lsn)`` is the part of an item up to ``lsn`` (None: nothing) and
        whether that is all of it (for a rewind while the stream was paused). ``bulk``: the
        caller means to read the whole range (a replay), so a part read to its end is read
        in full windows from the first ``pread`` on."""
        chosen = parts_for(snap.sealed, snap.active, start, stop)
        if not chosen:
            return
        state = self._state
        catalog = state.catalog
        catalog.acquire(chosen)
        try:
            for part in chosen:
                if state.rewinds != snap.rewinds:
                    raise _rewound(state, snap.rewinds, max(start, part.first_lsn), stop)
                loan = self._take(part, max(start, part.first_lsn))
                handle = loan.handle
                offset, first = HEADER_SIZE, part.first_lsn
                if start > first:
                    first, offset = self._index_of(part).seek_lsn(start, first)
                whole = bulk and stop >= part.last_lsn
                try:
                    for frame in decode_frames(
                        handle,
                        part.header,
                        decode,
                        start=offset,
                        end=part.end,
                        first_lsn=first,
                        from_lsn=start,
                        to_lsn=min(stop, part.last_lsn),
                        coding=state.coding,
                        first_chunk=READ_CHUNK if whole else FIRST_CHUNK,
                    ):
                        if state.rewinds != snap.rewinds:
                            # Checked per frame: a reader paused in a snapshot yields what a
                            # rewind kept (this open file is the old one) and stops before
                            # what it replaced.
                            lowest = state.rewound_below(snap.rewinds, stop + 1)
                            if lowest is not None:
                                kept, whole = through(frame, lowest)
                                if kept is not None:
                                    yield kept
                                if not whole:
                                    raise _rewound(state, snap.rewinds, start, stop)
                                continue
                        yield frame
                except CorruptionError:
                    state.telemetry.corruption()  # counted for segwal_corruption_errors_total
                    raise
                finally:
                    catalog.handles.give(loan)
                catalog.release(part.path)
                chosen = chosen[1:]
        finally:
            for part in chosen:
                catalog.release(part.path)

    def _index_of(self, part: Part) -> SparseIndex:
        """The part's sparse index; a sealed segment's is loaded (or rebuilt) on first use."""
        if part.index is not None:
            return part.index
        state = part.state
        if state is None or state.seal is None:
            return SparseIndex()  # no index: seek to the start, which is always right
        if state.index is None:
            # Built outside the lock: two readers may both build it; either result is right.
            state.index = load_index(self._fs, state.path, state.seal.digest, state.end)
        return state.index


def _rewound(state: LogState, seen: int, start: int, stop: int) -> ReaderFellBehindError:
    """A reader of ``start..stop`` that took its snapshot at rewind count ``seen``."""
    lowest = state.rewound_below(seen, stop + 1)
    lsn = start if lowest is None else max(start, lowest + 1)
    return ReaderFellBehindError(
        f"the log was rewound (truncate_after) while a reader needed LSN {lsn}",
        lsn=lsn,
        first_lsn=state.first_lsn,
    )
