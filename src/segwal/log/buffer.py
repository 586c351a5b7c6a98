"""The append buffer: single appends gathered in memory until they are written as one batch.

With ``buffer_bytes`` set, ``append`` gives a record its LSN at once and keeps its payload
here; the burst reaches the file as one batch (one frame run, all-or-nothing after a crash)
when it is full, when a record of another type arrives, when anything else needs the file
to hold every appended record in LSN order (a batch, a barrier, a rotation, a read of
unsynced records, close), or when the interval flusher runs. A frame holds records of one
type and one timestamp, so a burst has one of each: the stamp of its first record.

With ``compression_threads`` a full burst is not written here but queued in the compression
pipeline (log/pipeline.py) like a batch; ``queued`` counts the batches there, and
``last_lsn`` then covers them too, so ``pending`` is what "anything else" checks.
"""

from __future__ import annotations

from typing import NamedTuple


class Burst(NamedTuple):
    """Buffered records taken out for writing."""

    payloads: list[bytes]
    first_lsn: int
    record_type: int
    timestamp_us: int
    size: int  # payload bytes


class AppendBuffer:
    """Records that have LSNs but are not written yet (guarded by the log's lock)."""

    __slots__ = (
        "first_lsn",
        "last_lsn",
        "limit",
        "payloads",
        "queued",
        "record_type",
        "size",
        "stamp",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes that make a burst go to the file (0: no buffering)
        self.payloads: list[bytes] = []
        self.size = 0
        self.first_lsn = 0
        # The last LSN given out; reset to 0 only once the write has moved the segment's
        # last LSN up to it, so the log's last LSN never goes back in between.
        self.last_lsn = 0
        self.queued = 0  # batches in the compression pipeline, not yet written
        self.record_type = 0
        self.stamp = 0

    def __bool__(self) -> bool:
        return bool(self.payloads)

    @property
    def pending(self) -> bool:
        """Records that have LSNs but are not in the file yet (buffered or queued)."""
        return bool(self.payloads) or self.queued > 0

    def __len__(self) -> int:
        return len(self.payloads)

    def start(self, payload: bytes, lsn: int, record_type: int, stamp: int) -> bool:
        """Begin a burst with its first record; True when it is already full."""
        self.payloads = [payload]
        self.first_lsn = self.last_lsn = lsn
        self.record_type = record_type
        self.stamp = stamp
        self.size = len(payload)
        return self.size >= self.limit

    def add(self, payload: bytes, size: int) -> bool:
        """Add a record of the burst's type with the next LSN; True when the burst is full."""
        self.payloads.append(payload)
        self.last_lsn += 1
        self.size += size
        return self.size >= self.limit

    def take(self) -> Burst:
        """Take the burst out (a write inside it must not flush the same records again)."""
        burst = Burst(self.payloads, self.first_lsn, self.record_type, self.stamp, self.size)
        self.payloads = []
        self.size = 0
        return burst

    def written(self) -> None:
        """The taken burst was written (or the log failed): no LSN is given out ahead."""
        self.last_lsn = 0
