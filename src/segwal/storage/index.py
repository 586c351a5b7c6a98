"""The sparse index of a segment: every ~4 KiB, the LSN, offset and time of a batch start.

``read(lsn)``, ``lsn_at(timestamp)`` and paginated reads bisect it and then scan at most one
interval of frames, instead of scanning the segment from its start. The writer keeps the
active segment's index as it writes; a sealed segment's index is saved beside it as
``{segment}.idx`` when it is sealed (a cache: written without a barrier) and is rebuilt from
the frame heads whenever that file is missing, damaged or belongs to another segment. It is
never trusted blindly: every frame it leads to is checked again when read.

A clean close saves the active segment's index the same way (``save_tail``), its digest
field holding the close's token and the segment's end and last LSN instead of a seal's
digest: the open after that close takes it (``load_tail``) instead of scanning the segment,
and any later change (an append, a seal, a rewind and a new close) leaves it unusable.

Sidecar layout (little-endian)::

    0   8  magic     b"SWIDX001"
    8   4  count     entries
    12  4  interval  bytes between entries
    16 32  digest    the BLAKE3 digest of the segment it indexes (its seal's digest)
    48 24n entries   (u64 LSN, u64 offset, u64 timestamp_us) each
    ..  4  CRC32C    of everything before it
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
from bisect import bisect_right
from collections.abc import Iterator
from itertools import pairwise
from typing import Final

from segwal.format.features import frame_length
from segwal.format.layout import (
    FLAG_COMMIT,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    KIND_RECORDS,
    crc32c,
)
from segwal.storage.fileio import FileHandle, FileSystem
from segwal.storage.forklocks import LEAF, guard

log = logging.getLogger("segwal")

INTERVAL: Final = 4 << 10
INDEX_SUFFIX: Final = ".idx"
_MAGIC: Final = b"SWIDX001"
_HEAD = struct.Struct("<8sII32s")
_ENTRY = struct.Struct("<QQQ")
_CRC = struct.Struct("<I")
_SCAN_CHUNK: Final = 1 << 20


class SparseIndex:
    """Sorted (LSN, offset, timestamp) entries of batch starts, one per interval at most."""

    __slots__ = ("_next", "interval", "lsns", "offsets", "stamps")

    def __init__(self, interval: int = INTERVAL) -> None:
        self.interval = interval
        self.lsns: list[int] = []
        self.offsets: list[int] = []
        self.stamps: list[int] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self.lsns)

    def add(self, lsn: int, offset: int, timestamp_us: int) -> None:
        """Note a batch starting at ``offset``; kept only if an interval has passed."""
        if offset >= self._next:
            self.lsns.append(lsn)
            self.offsets.append(offset)
            self.stamps.append(timestamp_us)
            self._next = offset + self.interval

    def trim(self, end: int) -> None:
        """Drop the entries at or past ``end`` (bytes that were cut)."""
        while self.offsets and self.offsets[-1] >= end:
            self.lsns.pop()
            self.offsets.pop()
            self.stamps.pop()
        self._next = self.offsets[-1] + self.interval if self.offsets else 0

    def seek_lsn(self, lsn: int, first_lsn: int) -> tuple[int, int]:
        """(LSN, offset) of the last batch start at or before ``lsn``."""
        i = bisect_right(self.lsns, lsn) - 1
        if i < 0:
            return first_lsn, HEADER_SIZE
        return self.lsns[i], self.offsets[i]

    def seek_span(self, lsn: int, first_lsn: int, end: int) -> tuple[int, int, int]:
        """``seek_lsn``, and where the next indexed batch after it starts (``end`` past the
        last): how much a point read should read first. Only a size: a wrong one costs
        another read, never a wrong record (the frames read are checked)."""
        first, offset = self.seek_lsn(lsn, first_lsn)
        offsets = self.offsets
        i = bisect_right(offsets, offset)
        stop = offsets[i] if i < len(offsets) and offsets[i] > offset else end
        return first, offset, stop

    def seek_time(self, timestamp_us: int, first_lsn: int) -> tuple[int, int]:
        """(LSN, offset) of the last batch start stamped before ``timestamp_us``."""
        i = bisect_right(self.stamps, timestamp_us - 1) - 1
        if i < 0:
            return first_lsn, HEADER_SIZE
        return self.lsns[i], self.offsets[i]

    def encode(self, digest: bytes) -> bytes:
        parts = [_HEAD.pack(_MAGIC, len(self.lsns), self.interval, digest)]
        parts.extend(map(_ENTRY.pack, self.lsns, self.offsets, self.stamps))
        body = b"".join(parts)
        return body + _CRC.pack(crc32c(body))

    @classmethod
    def decode(cls, data: bytes, digest: bytes) -> SparseIndex | None:
        """The index in ``data`` if it is whole and belongs to the segment with ``digest``."""
        if len(data) < _HEAD.size + _CRC.size:
            return None
        magic, count, interval, owner = _HEAD.unpack_from(data)
        size = _HEAD.size + count * _ENTRY.size
        if magic != _MAGIC or owner != digest or len(data) != size + _CRC.size or interval < 1:
            return None
        if _CRC.unpack_from(data, size)[0] != crc32c(memoryview(data)[:size]):
            return None
        index = cls(interval)
        for lsn, offset, stamp in _ENTRY.iter_unpack(memoryview(data)[_HEAD.size : size]):
            index.lsns.append(lsn)
            index.offsets.append(offset)
            index.stamps.append(stamp)
        if index.offsets and (
            index.offsets[0] != HEADER_SIZE or index.offsets != sorted(index.offsets)
        ):
            return None
        index._next = (index.offsets[-1] + interval) if index.offsets else 0
        return index


def sidecar_path(segment_path: str) -> str:
    return segment_path + INDEX_SUFFIX


def load(fs: FileSystem, segment_path: str, digest: bytes, end: int) -> SparseIndex:
    """The sealed segment's index from its sidecar, or rebuilt when that is unusable."""
    try:
        handle = fs.open_read(sidecar_path(segment_path))
    except OSError:
        handle = None
    if handle is not None:
        try:
            size = handle.size()
            data = (
                handle.pread(size, 0)
                if size <= _HEAD.size + 24 * (end // FRAME_HEAD_SIZE + 1) + 4
                else b""
            )
        except OSError:
            data = b""
        finally:
            handle.close()
        index = SparseIndex.decode(data, digest)
        if index is not None and (not index.offsets or index.offsets[-1] < end):
            return CheckedIndex(index, fs, segment_path, end)
    segment = fs.open_read(segment_path)
    try:
        return build(segment, end)
    finally:
        segment.close()


def save(fs: FileSystem, segment_path: str, index: SparseIndex, digest: bytes) -> None:
    """Write the sidecar of a sealed segment; a cache, so no barrier and errors are ignored."""
    path = sidecar_path(segment_path)
    try:
        with contextlib.suppress(OSError):
            fs.unlink(path)
        handle = fs.create(path)
        try:
            handle.pwrite(index.encode(digest), 0)
        finally:
            handle.close()
    except OSError:
        pass


_TAIL_OWNER = struct.Struct("<16sQQ")


def tail_owner(token: bytes, end: int, last_lsn: int) -> bytes:
    """The digest field of an active segment's sidecar: which close wrote it, for what end."""
    return _TAIL_OWNER.pack(token, end, last_lsn)


def save_tail(
    fs: FileSystem, segment_path: str, index: SparseIndex, token: bytes, end: int, last_lsn: int
) -> None:
    """The active segment's sidecar at a clean close; a cache like a sealed one's: no barrier
    (a sidecar that did not reach the disk whole fails its checksum and the open scans)."""
    save(fs, segment_path, index, tail_owner(token, end, last_lsn))


def load_tail(
    fs: FileSystem, segment_path: str, token: bytes, end: int, first_lsn: int, last_lsn: int
) -> SparseIndex | None:
    """The index a clean close saved for the active segment ending at ``end`` (LSN
    ``last_lsn``), or None when that sidecar is missing, damaged, from another close, or its
    entries could not be batch starts of that segment."""
    try:
        handle = fs.open_read(sidecar_path(segment_path))
    except OSError:
        return None
    try:
        size = handle.size()
        if size > _HEAD.size + _ENTRY.size * (end // FRAME_HEAD_SIZE + 1) + _CRC.size:
            return None
        data = handle.pread(size, 0)
    except OSError:
        return None
    finally:
        handle.close()
    index = SparseIndex.decode(data, tail_owner(token, end, last_lsn))
    if index is None or index.interval != INTERVAL:
        return None
    lsns, offsets = index.lsns, index.offsets
    if not lsns:
        return index if last_lsn < first_lsn else None
    # decode checked that offsets start at the header and are sorted; the LSNs must start
    # at the segment's first and rise with them, and nothing may lie past the end.
    if lsns[0] != first_lsn or offsets[-1] >= end or lsns[-1] > last_lsn:
        return None
    if any(b <= a for a, b in pairwise(lsns)):
        return None
    if any(b <= a for a, b in pairwise(offsets)):
        return None
    return CheckedIndex(index, fs, segment_path, end)  # whole is not right: see the class


def remove(fs: FileSystem, segment_path: str) -> None:
    """Delete a segment's sidecar if there is one."""
    with contextlib.suppress(OSError):
        fs.unlink(sidecar_path(segment_path))


def _batch_starts(
    handle: FileHandle, pos: int, end: int, expected: int | None
) -> Iterator[tuple[int, int, int]]:
    """(LSN, offset, timestamp) of each batch start in ``[pos, end)``, walking frame heads
    from ``pos`` (a batch start whose first LSN is ``expected``, when known) without
    checksums; a head that does not parse or does not follow ends the walk."""
    buf = b""
    base = pos
    batch_start = True
    while pos + FRAME_HEAD_SIZE <= end:
        if pos + FRAME_HEAD_SIZE > base + len(buf):
            base = pos
            buf = handle.pread(min(_SCAN_CHUNK, end - pos), pos)
            if len(buf) < FRAME_HEAD_SIZE:
                return
        _crc, kind, flags, _type, count, body, first, stamp, _durable = FRAME_HEAD.unpack_from(
            buf, pos - base
        )
        if kind != KIND_RECORDS or count == 0 or (expected is not None and first != expected):
            return
        if batch_start:
            yield first, pos, stamp
        batch_start = bool(flags & FLAG_COMMIT)
        expected = first + count
        pos += frame_length(flags, count, body)


def build(handle: FileHandle, end: int) -> SparseIndex:
    """Rebuild an index from the frame heads in ``[HEADER_SIZE, end)`` without checksums.

    Frames are checked when they are read; a head that does not parse ends the index early,
    which only makes later seeks scan further.
    """
    index = SparseIndex()
    for lsn, offset, stamp in _batch_starts(handle, HEADER_SIZE, end, None):
        index.add(lsn, offset, stamp)
    return index


class CheckedIndex(SparseIndex):
    """A sealed segment's index as its sidecar gave it, trusted entry by entry.

    The sidecar's checksum and digest say it is whole and meant for this segment, not that
    its entries are right: a stale, buggy or forged sidecar can point into a payload that
    embeds a checksum-valid frame, which a read would then return. So before a seek uses
    entry ``i``, the frame heads are walked from the last entry already checked (the first
    is checked from the segment header) to entry ``i``: each entry must be a batch start
    the walk lands on, with its LSN and time. The first disagreement replaces the whole
    index by one rebuilt from the frame heads (:attr:`rebuilt`), never an error.

    Cost: a seek into the checked prefix costs nothing more; otherwise it walks the frame
    heads between the last checked entry and its own, once. Over the life of the index that
    is at most one walk of the segment, the cost of a rebuild, paid only as far as reads
    actually go (a consumer reading forward pays about one interval per interval it reads).

    The active segment's index from a clean close's sidecar is one too, and grows: entries
    the writer adds after ``end`` (the ``loaded`` ones are the sidecar's) are its own and
    need no check; a rebuild keeps them.
    """

    __slots__ = ("_checked", "_end", "_fs", "_loaded", "_lock", "_path", "_trusted", "rebuilt")

    def __init__(self, loaded: SparseIndex, fs: FileSystem, segment_path: str, end: int) -> None:
        super().__init__(loaded.interval)
        self.lsns, self.offsets, self.stamps = loaded.lsns, loaded.offsets, loaded.stamps
        self._next = loaded._next
        self._fs, self._path, self._end = fs, segment_path, end
        self._checked = 0  # entries [0, _checked) are known batch starts
        self._loaded = len(self.lsns)  # entries past these were added by the writer
        self._trusted = not self.lsns  # set last: once true, the lists never change again
        self._lock = guard(threading.Lock(), LEAF)
        self.rebuilt = False

    def seek_lsn(self, lsn: int, first_lsn: int) -> tuple[int, int]:
        if self._trusted:
            return super().seek_lsn(lsn, first_lsn)
        with self._lock:
            self._check_through(bisect_right(self.lsns, lsn) - 1)
            return super().seek_lsn(lsn, first_lsn)

    def seek_time(self, timestamp_us: int, first_lsn: int) -> tuple[int, int]:
        if self._trusted:
            return super().seek_time(timestamp_us, first_lsn)
        with self._lock:
            self._check_through(bisect_right(self.stamps, timestamp_us - 1) - 1)
            return super().seek_time(timestamp_us, first_lsn)

    def _check_through(self, last: int) -> None:
        """Make entries ``0..last`` checked, or rebuild the index (lock held)."""
        last = min(last, self._loaded - 1)
        if last < self._checked:
            return
        start, expected = HEADER_SIZE, None
        if self._checked:
            start, expected = self.offsets[self._checked - 1], self.lsns[self._checked - 1]
        j = self._checked
        handle = self._fs.open_read(self._path)
        try:
            for lsn, offset, stamp in _batch_starts(handle, start, self._end, expected):
                if offset < self.offsets[j]:
                    continue
                if (offset, lsn, stamp) != (self.offsets[j], self.lsns[j], self.stamps[j]):
                    break  # the walk stepped over entry j, or it disagrees with the frame
                j += 1
                if j > last:
                    self._checked = j
                    self._trusted = j == self._loaded
                    return
            fresh = build(handle, self._end)
        finally:
            handle.close()
        log.warning("index sidecar of %s disagrees with the segment; rebuilt it", self._path)
        loaded = self._loaded
        fresh.lsns += self.lsns[loaded:]  # the writer's own entries, past ``end``
        fresh.offsets += self.offsets[loaded:]
        fresh.stamps += self.stamps[loaded:]
        self.lsns, self.offsets, self.stamps = fresh.lsns, fresh.offsets, fresh.stamps
        self._next = max(self._next, fresh._next)
        self._loaded = self._checked = len(self.lsns)
        self.rebuilt = True
        self._trusted = True
