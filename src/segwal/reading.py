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

from segwal.base import WalBase, log
from segwal.errors import NotFoundError, ReaderFellBehindError, StorageError
from segwal.format import HEADER_SIZE, SegmentHeader
from segwal.index import SparseIndex
from segwal.index import load as load_index
from segwal.index import remove as remove_index
from segwal.recovery import SegmentState
from segwal.segment import iter_records
from segwal.types import Record


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
        return _Snapshot(parts, first, last, limit, durable)

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
        for record in chain.from_iterable(self._stream(snap.parts, lsn, lsn)):
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
        return chain.from_iterable(self._stream(snap.parts, start, stop))

    def _stream(self, parts: list[_Part], start: int, stop: int) -> Iterator[Iterator[Record]]:
        index = max(0, bisect_right([p.first_lsn for p in parts], start) - 1)
        chosen = [p for p in parts[index:] if p.first_lsn <= stop and p.last_lsn >= start]
        if not chosen:
            return
        self._pin(chosen)
        try:
            for part in chosen:
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
                        to_lsn=stop,
                    )
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
