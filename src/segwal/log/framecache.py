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

A hit takes no lock: frames are added and removed under the lock, by publishing a new
table (one tuple), so a reader racing them sees the table before or after, never between.
What a cached read does not re-check: the frame's CRC (or its authentication tag)
was checked when it entered the cache; damage to the file after that is found by the next
read that misses, ``replay``, ``verify`` or a scrub, not by a cached read.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right
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


_Table = tuple["array[int]", "array[int]", list[Cached]]
_EMPTY: _Table = (array("q"), array("q"), [])


class FrameCache:
    """Checked frames by first LSN, for one rewind count, at most ``limit`` bytes.

    The cached frames' first and stop LSNs are two sorted arrays of machine words beside a
    list of the frames, published together as one tuple that is replaced, never changed, so
    a hit reads a consistent table without a lock, and its bisect walks 8-byte words in a
    few cache lines instead of thousands of int objects (a log of 4,000 segments keeps
    4,000 frames). Adding or dropping a frame copies the table: it happens on a miss, which
    reads and checks a frame from the file anyway.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0  # statistics (counted without the lock: a hit takes none)
        self.misses = 0  # frames read from the file for a point read
        self.rewinds = 0  # the rewind count the cached frames belong to
        self._lock = threading.Lock()
        self._table: _Table = _EMPTY  # (firsts, stops, frames), sorted by first LSN
        # first LSN -> frame, oldest insertion first (the eviction hand's order; lock held).
        self._order: dict[int, Cached] = {}

    def find(self, lsn: int, rewinds: int) -> Cached | None:
        """The cached frame holding ``lsn`` for a reader at rewind count ``rewinds``."""
        if rewinds != self.rewinds:
            return None
        firsts, stops, frames = self._table
        i = bisect_right(firsts, lsn) - 1
        if i < 0 or lsn >= stops[i]:
            return None
        cached = frames[i]
        cached.used = True
        self.hits += 1
        return cached

    def add(self, token: object, rewinds: int, frame: PlainFrame) -> Cached:
        """Keep ``frame`` (checked, durable) for readers at ``rewinds``; its cache entry,
        kept or not (a frame larger than the cache, or read before a rewind, is not)."""
        cached = Cached(token, frame)
        if cached.size > self.limit:
            return cached
        with self._lock:
            if rewinds < self.rewinds:
                return cached  # read before a rewind: not for later readers
            if rewinds > self.rewinds:
                self._clear_locked()  # bytes from before a rewind
                self.rewinds = rewinds  # after the clear: a reader at it finds no old frame
            old = self._order.get(cached.first)
            if old is not None:
                self._remove_locked([old])
            self._order[cached.first] = cached
            self.size += cached.size
            firsts, stops, frames = self._table
            i = bisect_right(firsts, cached.first)
            self._table = (
                firsts[:i] + array("q", (cached.first,)) + firsts[i:],
                stops[:i] + array("q", (cached.stop,)) + stops[i:],
                [*frames[:i], cached, *frames[i:]],
            )
            self._evict_locked()
        return cached

    def _evict_locked(self) -> None:
        """Second chance: the oldest frame goes unless read since the hand last passed."""
        order = self._order
        victims: list[Cached] = []
        size = self.size
        while size > self.limit and order:
            first = next(iter(order))
            victim = order.pop(first)
            if victim.used:
                victim.used = False
                order[first] = victim  # to the back of the line
                continue
            victims.append(victim)
            size -= victim.size
        if victims:
            for victim in victims:
                order[victim.first] = victim  # _remove_locked takes them out
            self._remove_locked(victims)

    def _remove_locked(self, doomed: list[Cached]) -> None:
        gone = {id(c) for c in doomed}
        for cached in doomed:
            if self._order.get(cached.first) is cached:
                del self._order[cached.first]
                self.size -= cached.size
        firsts, stops, frames = self._table
        kept = [i for i, c in enumerate(frames) if id(c) not in gone]
        self._table = (
            array("q", map(firsts.__getitem__, kept)),
            array("q", map(stops.__getitem__, kept)),
            list(map(frames.__getitem__, kept)),
        )

    def forget(self, doomed: Callable[[object], bool]) -> None:
        """Drop the frames of every segment object ``doomed`` says is gone."""
        with self._lock:
            victims = [c for c in self._order.values() if doomed(c.token)]
            if victims:
                self._remove_locked(victims)

    def _clear_locked(self) -> None:
        self._table = _EMPTY
        self._order = {}
        self.size = 0

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    def __len__(self) -> int:
        return len(self._order)
