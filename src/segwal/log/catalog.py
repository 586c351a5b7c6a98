"""The segment catalog: the set of segments of an open log, and who is reading which.

The catalog owns the sealed segments as an immutable tuple of parts (replaced whole on
every change, so a reader's snapshot is one reference, whatever the number of segments),
the readonly view's unsealed tail, and a reference count per segment file that readers
hold while they stream it. A segment retired while a reader is on it is deleted when its
last reader lets go (hashicorp/raft-wal's ``state.go`` does the same with finalizers).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

from segwal.format.layout import SegmentHeader
from segwal.log.framecache import FrameCache
from segwal.log.handles import HandleCache
from segwal.storage.fileio import FileSystem
from segwal.storage.forklocks import LEAF, guard
from segwal.storage.index import SparseIndex
from segwal.storage.index import remove as remove_index
from segwal.storage.recovery import SegmentState
from segwal.storage.segment import SegmentWriter
from segwal.types import SegmentInfo

log = logging.getLogger("segwal")


@dataclass(frozen=True, slots=True)
class Part:
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
    # The object that names these bytes for the frame cache: the segment's state, the
    # writer, or the readonly tail's state (a rewrite or a new plan brings a new one).
    token: object = None


def sealed_part(s: SegmentState) -> Part:
    return Part(
        s.path, s.header, s.end, s.header.first_lsn, s.last_lsn, s.min_ts, s.max_ts, s, token=s
    )


def writer_part(writer: SegmentWriter) -> Part:
    return Part(
        writer.path,
        writer.header,
        writer.offset,
        writer.first_lsn,
        writer.last_lsn,
        writer.min_ts,
        writer.max_ts,
        index=writer.index,
        token=writer,
    )


def tail_part(tail: SegmentState) -> Part:
    """A readonly view's unsealed tail: its index is the one recovery built."""
    return Part(
        tail.path,
        tail.header,
        tail.end,
        tail.header.first_lsn,
        tail.last_lsn,
        tail.min_ts,
        tail.max_ts,
        index=tail.index,
        token=tail,
    )


def segment_info(state: SegmentState) -> SegmentInfo:
    """The public description of a recovered or sealed segment."""
    seal = state.seal
    return SegmentInfo(
        path=state.path,
        sequence=state.header.sequence,
        first_lsn=state.header.first_lsn,
        last_lsn=state.last_lsn,
        size_bytes=state.size,
        sealed=seal is not None,
        created_us=state.header.created_us,
        min_timestamp_us=state.min_ts,
        max_timestamp_us=state.max_ts,
        digest=seal.digest.hex() if seal is not None else "",
    )


def writer_info(writer: SegmentWriter) -> SegmentInfo:
    """The public description of the active segment."""
    return SegmentInfo(
        path=writer.path,
        sequence=writer.header.sequence,
        first_lsn=writer.first_lsn,
        last_lsn=writer.last_lsn,
        size_bytes=writer.offset,
        sealed=False,
        created_us=writer.header.created_us,
        min_timestamp_us=writer.min_ts,
        max_timestamp_us=writer.max_ts,
    )


def writer_state(writer: SegmentWriter) -> SegmentState:
    """The active segment as recovery would describe it (for rewinds)."""
    return SegmentState(
        path=writer.path,
        header=writer.header,
        size=writer.offset,
        end=writer.offset,
        last_lsn=writer.last_lsn,
        min_ts=writer.min_ts,
        max_ts=writer.max_ts,
    )


@dataclass(frozen=True, slots=True)
class Sealed:
    """An immutable generation of the sealed segments, with their first LSNs and latest
    timestamps for bisecting."""

    states: tuple[SegmentState, ...]
    parts: tuple[Part, ...]
    firsts: tuple[int, ...]
    # The latest timestamp in parts[0..i]: non-decreasing even past an empty segment.
    ceilings: tuple[int, ...] = ()

    @classmethod
    def of(cls, states: Iterable[SegmentState]) -> Sealed:
        kept = tuple(states)
        parts = tuple(map(sealed_part, kept))
        ceilings = tuple(accumulate((p.max_ts for p in parts), max))
        return cls(kept, parts, tuple(p.first_lsn for p in parts), ceilings)

    def plus(self, state: SegmentState) -> Sealed:
        part = sealed_part(state)
        ceiling = max(self.ceilings[-1], part.max_ts) if self.ceilings else part.max_ts
        return Sealed(
            (*self.states, state),
            (*self.parts, part),
            (*self.firsts, part.first_lsn),
            (*self.ceilings, ceiling),
        )

    def from_time(self, timestamp_us: int) -> int:
        """The index of the first part with a record stamped at or after ``timestamp_us``
        (``len(parts)`` when none): parts before it are all earlier."""
        return bisect_left(self.ceilings, timestamp_us)


def parts_for(sealed: Sealed, active: Part | None, start: int, stop: int) -> list[Part]:
    """The parts holding LSNs ``start..stop``, oldest first, at a cost that does not grow
    with the number of segments before ``start``."""
    chosen: list[Part] = []
    parts = sealed.parts
    for i in range(max(0, bisect_right(sealed.firsts, start) - 1), len(parts)):
        part = parts[i]
        if part.first_lsn > stop:
            return chosen
        if part.last_lsn >= start:
            chosen.append(part)
    if active is not None and active.first_lsn <= stop and active.last_lsn >= start:
        chosen.append(active)
    return chosen


class SegmentCatalog:
    """The segments of one open log, and the readers on them.

    ``sealed`` is replaced, never changed in place, so a reader that took it keeps a
    consistent list. ``tail`` is the last segment of a readonly view when it is unsealed
    (a writable log's active segment is the writer's, not the catalog's).
    """

    def __init__(
        self, fs: FileSystem, directory: str, *, track_readers: bool, cache_bytes: int = 0
    ) -> None:
        self._fs = fs
        self._directory = directory
        self._track = track_readers  # readonly views delete nothing, so they count nothing
        self._lock = guard(threading.Lock(), LEAF)
        self._readers: dict[str, int] = {}  # segment path -> readers streaming it
        self._retired: set[str] = set()  # deleted from the log, waiting for their readers
        self._closed = False
        self.sealed = Sealed((), (), ())
        self.tail: SegmentState | None = None
        self.handles = HandleCache(fs)  # open read handles of sealed segments
        self.frames = FrameCache(cache_bytes)  # checked frames for point reads

    def replace(
        self,
        sealed: Iterable[SegmentState],
        tail: SegmentState | None = None,
        *,
        same_writer: bool = True,
    ) -> None:
        self.sealed = Sealed.of(sealed)
        self.tail = tail
        self.handles.keep_only(self.sealed.states)
        # The frames of segments this plan no longer holds go with them. The others stay,
        # whatever object names them now: an LSN names the same bytes until a rewind, and
        # the frame cache belongs to one rewind count (log/framecache.py) -- within one
        # writer's session. A new writer's recovery may cut durable-looking records of the
        # tail in place (a torn or rotted last batch) and write others under their LSNs
        # without a rewind: across sessions only frames of segments sealed before and now,
        # by the same seal, are kept.
        if same_writer:
            kept = {(s.path, s.header) for s in self.sealed.states}
            if tail is not None:
                kept.add((tail.path, tail.header))
            self.frames.forget(
                lambda t: (getattr(t, "path", None), getattr(t, "header", None)) not in kept
            )
            return
        sealed_now: set[object] = {(s.path, s.header, s.seal) for s in self.sealed.states}

        def gone(token: object) -> bool:
            seal = getattr(token, "seal", None)
            where = (getattr(token, "path", None), getattr(token, "header", None), seal)
            return seal is None or where not in sealed_now

        self.frames.forget(gone)

    def add_sealed(self, state: SegmentState) -> None:
        self.sealed = self.sealed.plus(state)

    def drop(self, paths: set[str]) -> None:
        """Forget sealed segments the log no longer holds (their files are handled apart)."""
        self.sealed = Sealed.of(s for s in self.sealed.states if s.path not in paths)
        self.handles.forget(paths)
        self._forget_frames(paths)

    def _forget_frames(self, paths: set[str]) -> None:
        self.frames.forget(lambda token: getattr(token, "path", None) in paths)

    def infos(self) -> list[SegmentInfo]:
        infos = [segment_info(s) for s in self.sealed.states]
        if self.tail is not None:
            infos.append(segment_info(self.tail))
        return infos

    def retire(self, path: str) -> bool:
        """Delete a segment's file now, or once its last reader lets go; True if deferred.

        The caller has made the log's new first LSN durable, and fsyncs the directory.
        """
        self.handles.forget({path})  # an open handle would keep the file's space
        self._forget_frames({path})
        with self._lock:
            if self._readers.get(path, 0) > 0:
                self._retired.add(path)
                return True
        self._fs.unlink(path)
        remove_index(self._fs, path)
        return False

    def acquire(self, parts: list[Part]) -> None:
        """A reader starts on these parts: their files stay until it lets go."""
        if not self._track:
            return
        with self._lock:
            readers = self._readers
            for part in parts:
                readers[part.path] = readers.get(part.path, 0) + 1

    def release(self, path: str) -> None:
        """A reader is done with a segment: delete it if it was retired meanwhile."""
        if not self._track:
            return
        with self._lock:
            count = self._readers.get(path, 0) - 1
            if count > 0:
                self._readers[path] = count
                return
            self._readers.pop(path, None)
            if path not in self._retired or self._closed:
                return
            self._retired.discard(path)
        try:
            self._fs.unlink(path)
            remove_index(self._fs, path)
            self._fs.sync_dir(self._directory, "retention.deferred")
        except OSError as exc:
            # Left below the checkpoint, the file is removed at the next open.
            log.warning("could not remove %s after its last reader: %s", path, exc)

    def close(self) -> None:
        """Retired files still read stay for the next open to remove (they are below META)."""
        self.handles.close()
        self.frames.clear()
        with self._lock:
            self._closed = True
