"""What a log tells the program around it: counters ``Stats`` lacked, the fsync-duration
histogram and one log line per notable event (observers get ``segwal.events``, from
``LogState.emit``).

Dependency-free and I/O-free: the log's parts call in, and this module only counts and logs
through the stdlib ``segwal`` logger (no handlers: the program configures logging). Every
log line carries structured fields in ``extra`` (``event``, ``log`` and what the event is
about), so a JSON formatter can pick them up without parsing text.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from typing import Final

log = logging.getLogger("segwal")

# Upper bounds (seconds) of the fsync-duration histogram: etcd's wal_fsync_duration_seconds
# buckets, 1 ms doubling to 8.192 s; a last, implicit bucket is +Inf.
FSYNC_BUCKETS: Final = tuple(0.001 * 2**i for i in range(14))


class Telemetry:
    """Counters and histogram of one open log. Thread-safe, ``fsynced`` called by one
    thread at a time (the group commit's barrier leader)."""

    def __init__(self, path: str, slow_fsync_seconds: float = 1.0) -> None:
        self.path = path
        self.slow_fsync_seconds = slow_fsync_seconds
        self._lock = threading.Lock()
        self.fsync_buckets = [0] * (len(FSYNC_BUCKETS) + 1)  # per bucket, not cumulative
        self.fsync_seconds = 0.0
        self.corruption_errors = 0
        self.retention_deletions = 0

    # -- events ---------------------------------------------------------------------------

    def fsynced(self, seconds: float) -> None:
        """A data barrier of the active segment took ``seconds``."""
        # No lock: the group commit runs one barrier at a time, so this has one writer at a
        # time, and a reader copies the list (one step under the GIL) and counts from it.
        # The bucket: the first bound not below ``seconds`` (bisect_left), +Inf past the last.
        self.fsync_buckets[bisect_left(FSYNC_BUCKETS, seconds)] += 1
        self.fsync_seconds += seconds
        if seconds >= self.slow_fsync_seconds:
            log.warning(
                "slow fdatasync on %s: %.3f s (threshold %.3f s)",
                self.path,
                seconds,
                self.slow_fsync_seconds,
                extra=self._extra("slow_fsync", seconds=seconds, threshold=self.slow_fsync_seconds),
            )

    def corruption(self) -> None:
        with self._lock:
            self.corruption_errors += 1

    def deleted(self, count: int) -> None:
        with self._lock:
            self.retention_deletions += count

    def rotated(self, reason: str, path: str, first_lsn: int, last_lsn: int) -> None:
        log.info(
            "rotated: sealed %s (LSNs %d..%d), reason %s",
            path,
            first_lsn,
            last_lsn,
            reason,
            extra=self._extra(
                "rotation", path=path, reason=reason, first_lsn=first_lsn, last_lsn=last_lsn
            ),
        )

    def fsync_histogram(self) -> tuple[tuple[tuple[float, int], ...], float, int]:
        """Cumulative ``(upper bound, count)`` pairs ending with +Inf, the sum and the count."""
        # The count is the buckets' sum, so the two always agree; the sum of seconds may
        # trail by the barrier that is being counted right now.
        buckets, total = list(self.fsync_buckets), self.fsync_seconds
        cumulative, running = [], 0
        for bound, n in zip((*FSYNC_BUCKETS, float("inf")), buckets, strict=True):
            running += n
            cumulative.append((bound, running))
        return tuple(cumulative), total, running

    def _extra(self, event: str, **fields: object) -> dict[str, object]:
        return {"event": event, "log": self.path, **fields}


def event_extra(event: str, log_path: str, **fields: object) -> dict[str, object]:
    """The structured fields of a log line about ``event`` in the log at ``log_path``."""
    return {"event": event, "log": log_path, **fields}
