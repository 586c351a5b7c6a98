"""A barrier's fdatasync racing another append whose write fails (found by review; the
Python group commit and the compiled DurableWait had it alike): the failure (state.fail,
then SegmentWriter.discard_unsynced) cuts the segment back to ``writer.synced``, which the
in-flight barrier has not raised yet; the barrier then ends and declares its target durable,
so an append was acknowledged as durable and a reopen did not find it, and LOCK told readers
in other processes an LSN the file no longer held. Now the barrier's end checks for a failure
under the mutex and declares nothing durable. The window is the fdatasync itself, so each
test tries a number of times and fails on the first loss.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import segwal
from segwal.storage.lockfile import read_lock


def _race(path: Path, delay: float) -> tuple[segwal.Wal, list[int]]:
    """Durable appends from a thread while this one's write fails; the log (failed, still
    open) and the LSNs the thread was told are durable."""
    wal = segwal.open(path, sync="always", direct_io=True)
    wal.append(b"first")
    writer = wal._state.writer
    assert writer is not None
    handle = writer.handle
    if not hasattr(handle, "_dfd"):
        wal.close()
        pytest.skip("this file system refuses O_DIRECT")
    acked: list[int] = []
    stop = threading.Event()

    def durable_appends() -> None:
        try:
            while not stop.is_set():
                acked.append(wal.append(b"B" * 100))
        except (segwal.StorageError, segwal.WalFailedError):
            pass  # the failing write may be this thread's own, or the log failed meanwhile

    thread = threading.Thread(target=durable_appends)
    thread.start()
    time.sleep(delay)
    # The next O_DIRECT write fails (ENOSPC); the buffered descriptor's fdatasync still works.
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, handle._dfd)
    os.close(full)
    with pytest.raises((segwal.StorageError, segwal.WalFailedError)):
        wal.append(b"A" * 100)
    stop.set()
    thread.join(10)
    return wal, acked


def _delay(attempt: int) -> float:
    return 0.01 + (attempt % 7) * 0.003


@pytest.mark.timeout(120)
def test_an_append_cut_by_a_concurrent_failed_write_is_never_acknowledged(tmp_path: Path) -> None:
    for attempt in range(40):
        path = tmp_path / f"log{attempt}"
        wal, acked = _race(path, _delay(attempt))
        wal.close()
        with segwal.open(path) as again:
            found = {record.lsn for record in again.replay()}
        lost = [lsn for lsn in acked if lsn not in found]
        assert not lost, f"attempt {attempt}: appends acknowledged as durable, then lost: {lost}"


@pytest.mark.timeout(120)
def test_lock_never_publishes_a_durable_lsn_a_failed_write_cut(tmp_path: Path) -> None:
    """What LOCK tells readers in other processes against what the segment holds, before
    the writer closes."""
    for attempt in range(40):
        path = tmp_path / f"log{attempt}"
        wal, _ = _race(path, _delay(attempt))
        published = read_lock(wal._state.fs, str(path))
        assert published is not None
        with segwal.open(path, readonly=True) as view:
            held = max((record.lsn for record in view.replay()), default=0)
        wal.close()
        assert published.durable_lsn <= held, (
            f"attempt {attempt}: LOCK says {published.durable_lsn}, file holds {held}"
        )
