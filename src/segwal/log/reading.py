"""Reading the log: ``read`` and ``replay`` over a snapshot of the segments.

A reader takes a snapshot of the segment list under the log lock and pins the segments it
will read, so retention defers deleting their files until the reader lets go. Records are
streamed frame by frame and flattened in C, so memory stays bounded by one read window.
"""

from __future__ import annotations

import errno
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain
from time import monotonic, sleep

from segwal.errors import (
    ChecksumError,
    ConfigError,
    CorruptionError,
    NotFoundError,
    ReaderFellBehindError,
    StorageError,
)
from segwal.format.layout import HEADER_SIZE, SegmentHeader
from segwal.format.scanner import Status
from segwal.log.base import WalBase, log
from segwal.storage.index import SparseIndex
from segwal.storage.index import load as load_index
from segwal.storage.index import remove as remove_index
from segwal.storage.recovery import SegmentState
from segwal.storage.segment import iter_frames, iter_records
from segwal.types import Batch, Record


@dataclass(frozen=True, slots=True)
class _Part:
    """One segment as a reader sees it at snapshot time."""

    path: str
    header: SegmentHeader
    end: int  # bytes to read up to: the seal's offset or the writer's offset at snapshot
    first_lsn: int
    last_lsn: int
    min_ts: int
    max_ts: int
    state: SegmentState | None = None  # a sealed segment, whose index is loaded lazily
    index: SparseIndex | None = None  # the active segment's live index


@dataclass(frozen=True, slots=True)
class _Snapshot:
    parts: list[_Part]
    first: int
    last: int
    limit: int  # the last LSN the reader may see (durable, unless it asked otherwise)
    durable: int
    rewinds: int  # the log's truncate_after count when the snapshot was taken


def _sealed_part(s: SegmentState) -> _Part:
    return _Part(s.path, s.header, s.end, s.header.first_lsn, s.last_lsn, s.min_ts, s.max_ts, s)


class Reading(WalBase):
    """The read side of :class:`segwal.Wal`."""

    def _refresh_view(self) -> None:
        """Readonly logs look at the directory again (overridden by Wal)."""

    def _snapshot(self, unsynced: bool) -> _Snapshot:
        self._check_open()
        if self._config.readonly:
            self._refresh_view()
        with self._lock:
            if unsynced and self._pending and self._failure is None:
                self._flush_pending()  # unsynced readers see every appended record
            parts = [_sealed_part(s) for s in self._sealed]
            writer = self._writer
            if writer is not None:
                parts.append(
                    _Part(
                        writer.path,
                        writer.header,
                        writer.offset,
                        writer.first_lsn,
                        writer.last_lsn,
                        writer.min_ts,
                        writer.max_ts,
                        index=writer.index,
                    )
                )
            elif self._tail is not None:
                t = self._tail
                parts.append(replace(_sealed_part(t), state=None, index=t.index))
            first, last = self.first_lsn, self.last_lsn
        durable = self._commit.durable_lsn
        limit = last if unsynced else min(last, durable)
        return _Snapshot(parts, first, last, limit, durable, self._rewinds)

    def read(self, lsn: int, *, unsynced: bool = False) -> Record:
        """The record with this LSN. Only durable records, unless ``unsynced`` is True."""
        snap = self._snapshot(unsynced)
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
        for record in chain.from_iterable(self._stream(snap, lsn, lsn)):
            return record
        raise NotFoundError(
            f"LSN {lsn} is no longer in the log", lsn=lsn, first_lsn=first, last_lsn=last
        )

    def replay(
        self, from_lsn: int | None = None, to_lsn: int | None = None, *, unsynced: bool = False
    ) -> Iterator[Record]:
        """Stream records ``from_lsn..to_lsn`` (inclusive) in bounded memory.

        Only durable records are yielded unless ``unsynced`` is True: a reader never sees a
        record that a crash could still take back. ``from_lsn`` below the first LSN starts
        at the first LSN; the range is fixed when ``replay`` is called.
        """
        snap = self._snapshot(unsynced)
        start = snap.first if from_lsn is None else max(from_lsn, snap.first)
        stop = snap.limit if to_lsn is None else min(to_lsn, snap.limit)
        return chain.from_iterable(self._stream(snap, start, stop))

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
        if max_records < 1 or max_bytes < 1:
            raise ConfigError("max_records and max_bytes must be at least 1", option="max_records")
        snap = self._snapshot(unsynced)
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
        """The first LSN appended at or after ``timestamp_us`` (microseconds since the epoch).

        Append timestamps never decrease within a log (a clock stepping back repeats the last
        stamp), so this is a binary search: segments by their time range, then the sparse
        index, then at most one index interval of frames. Past the newest record it returns
        the next LSN to be appended.
        """
        snap = self._snapshot(unsynced)
        for part in snap.parts:
            if part.last_lsn < part.first_lsn or part.max_ts < timestamp_us:
                continue
            _first, offset = self._index_of(part).seek_time(timestamp_us, part.first_lsn)
            found = self._first_at(part, offset, timestamp_us)
            if found is None and offset != HEADER_SIZE:
                found = self._first_at(part, HEADER_SIZE, timestamp_us)  # distrust the index
            if found is not None:
                return max(min(found, snap.limit + 1), snap.first)
        return snap.limit + 1

    def _first_at(self, part: _Part, offset: int, timestamp_us: int) -> int | None:
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
        """Yield records from ``from_lsn`` as they become durable, waiting for more.

        ``timeout`` is how long to wait for the next record; when it passes with nothing
        new, the iteration ends (None waits for ever, until the log closes). Survives
        rotation; raises ReaderFellBehindError when retention removed what it needs.
        """
        self._check_open()
        return self._follow(from_lsn, timeout, unsynced)

    def _follow(
        self, from_lsn: int | None, timeout: float | None, unsynced: bool
    ) -> Iterator[Record]:
        next_lsn = self.first_lsn if from_lsn is None else from_lsn
        while True:
            if self._closed:
                return
            snap = self._snapshot(unsynced)
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
        if not self._config.readonly:
            return self._commit.wait_beyond(lsn, written=unsynced, timeout=timeout)
        deadline = None if timeout is None else monotonic() + timeout
        pause = 0.0005
        while not self._closed:
            self._refresh_view()
            limit = self.last_lsn if unsynced else min(self.last_lsn, self._commit.durable_lsn)
            if limit > lsn:
                return True
            if deadline is not None and monotonic() >= deadline:
                return False
            wait = pause if deadline is None else min(pause, max(0.0, deadline - monotonic()))
            sleep(wait)
            pause = min(pause * 2, 0.02)
        return False

    def _stream(self, snap: _Snapshot, start: int, stop: int) -> Iterator[Iterator[Record]]:
        parts = snap.parts
        index = max(0, bisect_right([p.first_lsn for p in parts], start) - 1)
        chosen = [p for p in parts[index:] if p.first_lsn <= stop and p.last_lsn >= start]
        if not chosen:
            return
        self._pin(chosen)
        try:
            for part in chosen:
                if self._rewinds != snap.rewinds:
                    raise ReaderFellBehindError(
                        f"the log was rewound (truncate_after) while a reader needed LSN "
                        f"{max(start, part.first_lsn)}",
                        lsn=max(start, part.first_lsn),
                        first_lsn=self.first_lsn,
                    )
                try:
                    handle = self._fs.open_read(part.path)
                except StorageError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    raise ReaderFellBehindError(
                        f"segment {part.path} was removed while a reader needed LSN "
                        f"{max(start, part.first_lsn)}",
                        lsn=max(start, part.first_lsn),
                        first_lsn=self.first_lsn,
                    ) from exc
                offset, first = HEADER_SIZE, part.first_lsn
                if start > first:
                    first, offset = self._index_of(part).seek_lsn(start, first)
                try:
                    yield from iter_records(
                        handle,
                        part.header,
                        start=offset,
                        end=part.end,
                        first_lsn=first,
                        from_lsn=start,
                        to_lsn=min(stop, part.last_lsn),
                    )
                except CorruptionError:
                    self._telemetry.corruption()  # counted for segwal_corruption_errors_total
                    raise
                finally:
                    handle.close()
                self._unpin(part.path)
                chosen = chosen[1:]
        finally:
            for part in chosen:
                self._unpin(part.path)

    def _index_of(self, part: _Part) -> SparseIndex:
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

    def _pin(self, parts: list[_Part]) -> None:
        if self._config.readonly:
            return
        with self._lock:
            for part in parts:
                self._pins[part.path] = self._pins.get(part.path, 0) + 1

    def _unpin(self, path: str) -> None:
        if self._config.readonly:
            return
        with self._lock:
            count = self._pins.get(path, 0) - 1
            if count > 0:
                self._pins[path] = count
                return
            self._pins.pop(path, None)
            if path not in self._doomed or self._closed:
                return
            self._doomed.discard(path)
            try:
                self._fs.unlink(path)
                remove_index(self._fs, path)
                self._fs.sync_dir(self._path, "retention.deferred")
            except OSError as exc:
                # Left below the checkpoint, the file is removed at the next open.
                log.warning("could not remove %s after its last reader: %s", path, exc)
