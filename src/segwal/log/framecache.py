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

    __slots__ = ("firsts", "frames", "rewinds", "token")

    def __init__(self, token: object, rewinds: int) -> None:
        self.token = token  # kept: an id reused by another object must not match
        self.rewinds = rewinds
        self.firsts: list[int] = []  # sorted
        self.frames: dict[int, PlainFrame] = {}  # first LSN -> frame


def _size(frame: PlainFrame) -> int:
    return len(frame.buf) + ENTRY_OVERHEAD


class FrameCache:
    """Frames by (segment object, rewind count, first LSN), at most ``limit`` bytes.

    Keyed by ints (object ids; each object is kept alive by its entry) so that a hit hashes
    no tuple: with thousands of segments, a hit's cost is the memory it touches.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0
        self.misses = 0  # frames read from the file for a point read (a statistic)
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # id(token) -> its frames
        # id(frame) -> (its segment, its first LSN), least recently used first.
        self._order: OrderedDict[int, tuple[_Segment, int]] = OrderedDict()

    def find(self, token: object, rewinds: int, lsn: int) -> PlainFrame | None:
        """The cached frame holding ``lsn`` in the segment ``token`` names, if any."""
        with self._lock:
            segment = self._segments.get(id(token))
            if segment is not None and segment.token is token and segment.rewinds == rewinds:
                i = bisect_right(segment.firsts, lsn) - 1
                if i >= 0:
                    frame = segment.frames[segment.firsts[i]]
                    if lsn < frame.first_lsn + frame.count:
                        self._order.move_to_end(id(frame))
                        self.hits += 1
                        return frame
        return None

    def add(self, token: object, rewinds: int, frame: PlainFrame) -> None:
        size = _size(frame)
        if size > self.limit:
            return
        first = frame.first_lsn
        with self._lock:
            segment = self._segments.get(id(token))
            if segment is not None and (segment.token is not token or segment.rewinds < rewinds):
                self._drop_locked(segment)  # another object, or bytes from before a rewind
                segment = None
            if segment is None:
                segment = self._segments[id(token)] = _Segment(token, rewinds)
            elif segment.rewinds > rewinds:
                return  # a reader from before a rewind: its frame is not for later readers
            old = segment.frames.get(first)
            if old is not None:
                del self._order[id(old)]
                self.size -= _size(old)
            else:
                insort(segment.firsts, first)
            segment.frames[first] = frame
            self._order[id(frame)] = (segment, first)
            self.size += size
            while self.size > self.limit:
                _key, (victim, victim_first) = self._order.popitem(last=False)
                dropped = victim.frames.pop(victim_first)
                del victim.firsts[bisect_right(victim.firsts, victim_first) - 1]
                self.size -= _size(dropped)
                if not victim.frames and self._segments.get(id(victim.token)) is victim:
                    del self._segments[id(victim.token)]

    def forget(self, doomed: Callable[[object], bool]) -> None:
        """Drop the frames of every segment object ``doomed`` says is gone."""
        with self._lock:
            for segment in list(self._segments.values()):
                if doomed(segment.token):
                    self._drop_locked(segment)

    def _drop_locked(self, segment: _Segment) -> None:
        del self._segments[id(segment.token)]
        for frame in segment.frames.values():
            del self._order[id(frame)]
            self.size -= _size(frame)

    def clear(self) -> None:
        with self._lock:
            self._segments.clear()
            self._order.clear()
            self.size = 0

    def __len__(self) -> int:
        return len(self._order)
