"""Checked frames kept for point reads (bounded by bytes, evicted by second chance).

A point read used to pread a whole frame, check its CRC (and decrypt and decompress it)
and decode it, for one record: a batch of 1,000 x 100 B is one 100 KB frame. Like RocksDB's
block cache, the log keeps frames it has checked, as their plain bodies (lengths table and
payloads) with the offset of every payload, and a read of a cached frame slices its one
payload without I/O, checks or a walk of the lengths table.

The cache is flat: one sorted list of the cached frames' first LSNs for the whole log, so a
hit is one bisect whatever the number of segments (a log of 4,000 segments costs what one of
200 does), and no segment object is looked up on the way. That is sound because an LSN names
the same bytes for as long as the log's rewind count stays the same:

- the cache belongs to one rewind count (``rewinds``), and serves only readers that took
  theirs at that count; a frame read before a rewind is refused once the cache has moved
  on, and the first frame added after a rewind empties it (a rewind is the only operation
  that gives an LSN other bytes: retention and checkpoints remove LSNs, and a reader checks
  the log's first LSN before it looks here);
- only frames whose last record is durable (at or below the durable LSN of the snapshot)
  are cached: bytes past the last barrier may still be cut after a failed one;
- each frame keeps the object that named its segment when it was read (a sealed segment's
  ``SegmentState``, the writer, a readonly tail), so that the frames of a segment the log
  lets go of (retention, a new plan without it) are dropped with it.

A hit takes no lock: frames are added and removed under the lock, in an order in which a
reader racing them finds either a right frame or none (it checks the frame it found holds
its LSN). What a cached read does not re-check: the frame's CRC (or its authentication tag)
was checked when it entered the cache; damage to the file after that is found by the next
read that misses, ``replay``, ``verify`` or a scrub, not by a cached read.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right, insort
from collections.abc import Callable
from functools import partial

from segwal.format.records import payload_offsets
from segwal.storage.segment import PlainFrame
from segwal.types import Record

ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per frame, beside the frame itself

_new_record = partial(tuple.__new__, Record)


class Cached:
    """One cached frame: its plain body, where each payload starts, and what named it."""

    __slots__ = (
        "buf",
        "first",
        "frame",
        "offsets",
        "size",
        "stamp",
        "stop",
        "token",
        "type",
        "used",
    )

    def __init__(self, token: object, frame: PlainFrame) -> None:
        buf = frame.buf
        self.buf = buf if buf.__class__ is bytes else bytes(buf)
        self.frame = frame
        self.token = token
        self.first = frame.first_lsn
        self.stop = frame.first_lsn + frame.count  # one past its last LSN
        self.type = frame.record_type
        self.stamp = frame.timestamp_us
        offsets = array("Q")
        offsets.frombytes(payload_offsets(self.buf, frame.table, frame.count, frame.end))
        self.offsets = offsets
        self.size = len(self.buf) + 8 * len(offsets) + ENTRY_OVERHEAD
        self.used = False  # read since the eviction hand last passed it

    def record(self, lsn: int) -> Record:
        """Record ``lsn`` (which this frame holds), sliced from memory."""
        offsets = self.offsets
        i = lsn - self.first
        return _new_record((lsn, self.type, self.stamp, self.buf[offsets[i] : offsets[i + 1]]))


class FrameCache:
    """Checked frames by first LSN, for one rewind count, at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0  # statistics (counted without the lock: a hit takes none)
        self.misses = 0  # frames read from the file for a point read
        self.rewinds = 0  # the rewind count the cached frames belong to
        self._lock = threading.Lock()
        self._firsts: list[int] = []  # sorted first LSNs of the cached frames
        # first LSN -> frame, oldest insertion first (the eviction hand's order).
        self._frames: dict[int, Cached] = {}

    def find(self, lsn: int, rewinds: int) -> Cached | None:
        """The cached frame holding ``lsn`` for a reader at rewind count ``rewinds``."""
        if rewinds != self.rewinds:
            return None
        firsts = self._firsts
        i = bisect_right(firsts, lsn) - 1
        if i < 0:
            return None
        try:
            cached = self._frames[firsts[i]]
        except (IndexError, KeyError):  # changed under us: a miss, never a wrong frame
            return None
        if not cached.first <= lsn < cached.stop:
            return None
        cached.used = True
        self.hits += 1
        return cached

    def add(self, token: object, rewinds: int, frame: PlainFrame) -> Cached:
        """Keep ``frame`` (checked, durable) for readers at ``rewinds``; its cache entry,
        kept or not (a frame larger than the cache, or read before a rewind, is not)."""
        cached = Cached(token, frame)
        if cached.size > self.limit:
            return cached
        first = cached.first
        with self._lock:
            if rewinds < self.rewinds:
                return cached  # read before a rewind: not for later readers
            if rewinds > self.rewinds:
                self._clear_locked()  # bytes from before a rewind
                self.rewinds = rewinds  # after the clear: a reader at it finds no old frame
            frames = self._frames
            old = frames.get(first)
            if old is not None:
                self._remove_locked(old)
            # The frame first, then its LSN: a reader that finds the LSN finds the frame.
            frames[first] = cached
            insort(self._firsts, first)
            self.size += cached.size
            self._evict_locked()
        return cached

    def _evict_locked(self) -> None:
        """Second chance: the oldest frame goes unless read since the hand last passed."""
        frames = self._frames
        while self.size > self.limit and frames:
            first = next(iter(frames))
            victim = frames[first]
            if victim.used:
                victim.used = False
                del frames[first]
                frames[first] = victim  # to the back of the line
                continue
            self._remove_locked(victim)

    def _remove_locked(self, cached: Cached) -> None:
        # Its LSN first, then the frame (the reverse of add).
        firsts = self._firsts
        i = bisect_right(firsts, cached.first) - 1
        if i >= 0 and firsts[i] == cached.first:
            del firsts[i]
        if self._frames.get(cached.first) is cached:
            del self._frames[cached.first]
        self.size -= cached.size

    def forget(self, doomed: Callable[[object], bool]) -> None:
        """Drop the frames of every segment object ``doomed`` says is gone."""
        with self._lock:
            for cached in [c for c in self._frames.values() if doomed(c.token)]:
                self._remove_locked(cached)

    def _clear_locked(self) -> None:
        self._firsts = []
        self._frames = {}
        self.size = 0

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    def __len__(self) -> int:
        return len(self._frames)
