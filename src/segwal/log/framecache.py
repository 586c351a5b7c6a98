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

import struct
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from segwal.format.records import cached_record as _cached_record
from segwal.format.records import payload_offsets
from segwal.storage.forklocks import LEAF, guard
from segwal.storage.framereads import PlainFrame
from segwal.types import Record

ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per frame, beside the frame itself

_new_record = partial(tuple.__new__, Record)


_OFFSETS = struct.Struct("=2Q")  # a payload's start and end, from the words after the body
_unpack_offsets = _OFFSETS.unpack_from


class Cached:
    """One cached frame: one bytes object holding its plain body and then the offset of each
    payload in it (``count + 1`` native u64 words from ``base``), and what named it.

    Body and offsets share one object so that a hit touches three cache lines of it (its
    head, two offsets, the payload) and no other object of the frame's.
    """

    __slots__ = ("base", "blob", "first", "row", "size", "stamp", "stop", "token", "type")

    def __init__(self, token: object, frame: PlainFrame) -> None:
        buf = frame.buf
        body = buf if buf.__class__ is bytes else bytes(buf)
        self.blob = body + payload_offsets(body, frame.table, frame.count, frame.end)
        self.base = len(body)
        self.token = token
        self.first = frame.first_lsn
        self.stop = frame.first_lsn + frame.count  # one past its last LSN
        self.type = frame.record_type
        self.stamp = frame.timestamp_us
        self.size = len(self.blob) + ENTRY_OVERHEAD
        self.row = (self.first, self.stop, self.type, self.stamp, self.base)

    def record(self, lsn: int) -> Record:
        """Record ``lsn`` (which this frame holds), sliced from memory."""
        blob = self.blob
        start, end = _unpack_offsets(blob, self.base + 8 * (lsn - self.first))
        return _new_record((lsn, self.type, self.stamp, blob[start:end]))


class _Table(NamedTuple):
    """The cached frames sorted by first LSN, in parallel sequences (replaced, never changed
    but for ``used``): machine words for what a hit compares and copies, so it touches no
    per-frame object but the frame's bytes. ``words`` holds a row of five native u64 per
    frame (first LSN, stop LSN, type, timestamp, base of its offsets), which the compiled
    hit path (``format.records.cached_record``) searches; ``firsts`` and ``stops`` are the
    pure path's."""

    firsts: array[int]
    stops: array[int]
    words: array[int]
    blobs: list[bytes]
    frames: list[Cached]
    used: bytearray  # read since the eviction hand last passed it (1) or not (0)

    @classmethod
    def of(cls, frames: list[Cached], used: bytes) -> _Table:
        words = array("Q")
        for c in frames:
            words.extend(c.row)
        return cls(
            array("q", [c.first for c in frames]),
            array("Q", [c.stop for c in frames]),  # unsigned: the stop after MAX_LSN is 2**63
            words,
            [c.blob for c in frames],
            frames,
            bytearray(used),
        )

    def inserted(self, i: int, c: Cached) -> _Table:
        """This table with ``c`` at ``i``: one copy of each sequence, no loop over frames."""

        def put(seq: Any, value: object) -> Any:
            copy = seq[:]
            copy.insert(i, value)
            return copy

        words = self.words
        return _Table(
            put(self.firsts, c.first),
            put(self.stops, c.stop),
            words[: 5 * i] + array("Q", c.row) + words[5 * i :],
            put(self.blobs, c.blob),
            put(self.frames, c),
            put(self.used, 0),
        )


_EMPTY = _Table.of([], b"")


class FrameCache:
    """Checked frames by first LSN, for one rewind count, at most ``limit`` bytes.

    The table of cached frames is published as one tuple that is replaced, never changed,
    so a hit reads a consistent table without a lock, and its bisect walks 8-byte words in
    a few cache lines instead of thousands of int objects (a log of 4,000 segments keeps
    4,000 frames). Adding or dropping a frame copies the table: it happens on a miss, which
    reads and checks a frame from the file anyway.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hits = 0  # statistics (counted without the lock: a hit takes none)
        self.misses = 0  # frames read from the file for a point read
        self.rewinds = 0  # the rewind count the cached frames belong to
        self._lock = guard(threading.Lock(), LEAF)
        self._table = _EMPTY
        # first LSN -> frame, oldest insertion first (the eviction hand's order; lock held).
        self._order: dict[int, Cached] = {}

    def record(self, lsn: int, rewinds: int) -> Record | None:
        """Record ``lsn`` from a cached frame, for a reader at rewind count ``rewinds``;
        None when no cached frame holds it. The hot path of ``Wal.read``: in C when the
        speed-up is built (``format.records.cached_record``), else ``_record_py``."""
        if rewinds != self.rewinds:
            return None
        table = self._table
        if _cached_record is not None and lsn.__class__ is int:
            record = _cached_record(table.firsts, table.words, table.blobs, table.used, lsn)
        else:
            record = self._record_py(table, lsn)
        if record is not None:
            self.hits += 1
        return record

    @staticmethod
    def _record_py(table: _Table, lsn: int) -> Record | None:
        """The pure reference of the compiled hit path."""
        i = bisect_right(table.firsts, lsn) - 1
        if i < 0 or lsn >= table.stops[i]:
            return None
        table.used[i] = 1
        _first, _stop, kind, stamp, base = table.words[5 * i : 5 * i + 5]
        blob = table.blobs[i]
        start, end = _unpack_offsets(blob, base + 8 * (lsn - table.firsts[i]))
        return _new_record((lsn, kind, stamp, blob[start:end]))

    def find(self, lsn: int, rewinds: int) -> Cached | None:
        """The cached frame holding ``lsn`` for a reader at rewind count ``rewinds``."""
        if rewinds != self.rewinds:
            return None
        table = self._table
        i = bisect_right(table.firsts, lsn) - 1
        if i < 0 or lsn >= table.stops[i]:
            return None
        table.used[i] = 1
        self.hits += 1
        return table.frames[i]

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
            table = self._table
            self._table = table.inserted(bisect_right(table.firsts, cached.first), cached)
            if self.size > self.limit:
                self._evict_locked()
        return cached

    def _evict_locked(self) -> None:
        """Second chance: the oldest frame goes unless read since the hand last passed."""
        order = self._order
        table = self._table
        where = {c.first: i for i, c in enumerate(table.frames)}
        victims: list[Cached] = []
        size = self.size
        while size > self.limit and order:
            first = next(iter(order))
            victim = order.pop(first)
            i = where.get(first)
            if i is not None and table.used[i]:
                table.used[i] = 0
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
        table = self._table
        kept = [i for i, c in enumerate(table.frames) if id(c) not in gone]
        self._table = _Table.of([table.frames[i] for i in kept], bytes(table.used[i] for i in kept))

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
