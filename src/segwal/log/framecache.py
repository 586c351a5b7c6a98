"""Checked frames kept for point reads (bounded by bytes, least recently used).

A point read used to pread a whole frame, check its CRC (and decrypt and decompress it)
and decode it, for one record: a batch of 1,000 x 100 B is one 100 KB frame. Like RocksDB's
block cache, the log keeps frames it has checked, as their plain bodies (lengths table and
payloads), and a read of a cached frame decodes its one record without I/O or checks.

A frame is cached only when it can never change under its key:

- the key names the frame's segment by an object, never a path: a sealed segment's
  ``SegmentState``, the writer's ``SegmentWriter``, a readonly view's tail state. A file
  rewritten by a rewind, recovered by another open, or seen again by a readonly view's new
  plan comes with a new object, so old frames are never found for it (the entry keeps its
  object, so an id reused by another object does not match either);
- the key holds the log's rewind count at the reader's snapshot, and a rewind drops the
  writer's frames with it;
- only frames whose last record is durable (at or below the durable LSN of the snapshot)
  are cached: bytes past the last barrier may still be cut after a failed one.

What a cached read does not re-check: the frame's CRC (or its authentication tag) was
checked when it entered the cache; damage to the file after that is found by the next read
that misses, ``replay``, ``verify`` or a scrub, not by a cached read.
"""

from __future__ import annotations

import threading
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable

from segwal.storage.segment import PlainFrame

ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per frame, beside the frame itself


class _Segment:
    """The cached frames of one segment object at one rewind count, by first LSN."""

    __slots__ = ("firsts", "frames", "token")

    def __init__(self, token: object) -> None:
        self.token = token  # kept: an id reused by another object must not match
        self.firsts: list[int] = []  # sorted
        self.frames: dict[int, tuple[PlainFrame, int]] = {}  # first LSN -> (frame, size)


class FrameCache:
    """Frames by (segment object, rewind count, first LSN), at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0
        self.misses = 0  # frames read from the file for a point read (a statistic)
        self._lock = threading.Lock()
        self._segments: dict[tuple[int, int], _Segment] = {}
        self._order: OrderedDict[tuple[tuple[int, int], int], None] = OrderedDict()

    def find(self, token: object, rewinds: int, lsn: int) -> PlainFrame | None:
        """The cached frame holding ``lsn`` in the segment ``token`` names, if any."""
        where = (id(token), rewinds)
        with self._lock:
            segment = self._segments.get(where)
            if segment is not None and segment.token is token:
                i = bisect_right(segment.firsts, lsn) - 1
                if i >= 0:
                    first = segment.firsts[i]
                    frame = segment.frames[first][0]
                    if lsn < first + frame.count:
                        self._order.move_to_end((where, first))
                        self.hits += 1
                        return frame
        return None

    def add(self, token: object, rewinds: int, frame: PlainFrame) -> None:
        size = len(frame.buf) + ENTRY_OVERHEAD
        if size > self.limit:
            return
        where = (id(token), rewinds)
        first = frame.first_lsn
        with self._lock:
            segment = self._segments.get(where)
            if segment is not None and segment.token is not token:
                self._drop_locked(where, segment)
                segment = None
            if segment is None:
                segment = self._segments[where] = _Segment(token)
            old = segment.frames.get(first)
            if old is not None:
                self.size -= old[1]
            else:
                insort(segment.firsts, first)
            segment.frames[first] = (frame, size)
            self._order[(where, first)] = None
            self.size += size
            while self.size > self.limit:
                (where_, first_), _ = self._order.popitem(last=False)
                victim = self._segments[where_]
                _frame, dropped = victim.frames.pop(first_)
                del victim.firsts[bisect_right(victim.firsts, first_) - 1]
                self.size -= dropped
                if not victim.frames:
                    del self._segments[where_]

    def forget(self, doomed: Callable[[object], bool]) -> None:
        """Drop the frames of every segment object ``doomed`` says is gone."""
        with self._lock:
            for where, segment in list(self._segments.items()):
                if doomed(segment.token):
                    self._drop_locked(where, segment)

    def _drop_locked(self, where: tuple[int, int], segment: _Segment) -> None:
        del self._segments[where]
        for first, (_frame, size) in segment.frames.items():
            del self._order[(where, first)]
            self.size -= size

    def clear(self) -> None:
        with self._lock:
            self._segments.clear()
            self._order.clear()
            self.size = 0

    def __len__(self) -> int:
        return len(self._order)
