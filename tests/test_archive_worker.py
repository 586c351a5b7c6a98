"""The upload worker survives a rewind in the middle of a batch and, when something
unexpected kills it, says why and wakes its waiters (review defects 3 and 4)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import segwal
from segwal.archive.memory import MemoryStore
from segwal.testing import MemoryFileSystem


def test_a_rewind_during_an_upload_batch_does_not_stop_archiving(tmp_path: Path) -> None:
    store = MemoryStore()
    wal = segwal.open(
        tmp_path / "log", archive=store, segment_bytes=4096, archive_poll_interval=0.02
    )
    try:
        for _ in range(15):
            wal.append(b"x" * 200)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
        store.latency = 0.2  # a slow store: the next batch is still running at the rewind
        for _ in range(60):
            wal.append(b"x" * 200)
        wal.rotate()
        time.sleep(0.3)
        wal.truncate_after(20)
        store.latency = 0.0
        for _ in range(30):
            wal.append(b"z" * 200)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
        status = wal.archive_status()
        assert status.stopped is None and status.running
    finally:
        wal.close()
    result = segwal.restore(store, tmp_path / "r")
    with (
        segwal.open(result.path, readonly=True) as restored,
        segwal.open(tmp_path / "log", readonly=True) as source,
    ):
        assert [bytes(r.payload) for r in restored.replay()] == [
            bytes(r.payload) for r in source.replay()
        ]


def test_an_unexpected_error_stops_the_worker_with_its_reason(tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    store = MemoryStore()
    wal = segwal.open("/log", filesystem=fs, archive=store, segment_bytes=4096)
    try:
        for _ in range(20):
            wal.append(b"x" * 200)
        # Sealing reads the segment too: the worker is held off (its upload lock) until
        # the disk turns bad, then it cannot read the sealed segment (EIO).
        with wal._uploader.busy:  # type: ignore[attr-defined]
            wal.rotate()
            fs.fail("read", times=None)
        with pytest.raises(segwal.ArchiveError, match="Input/output error"):
            wal.wait_archived(wal.last_lsn, timeout=10)
        status = wal.archive_status()
        assert not status.running and status.stopped and "Input/output error" in status.stopped
        assert status.last_error == status.stopped
        with pytest.raises(segwal.ArchiveError):
            wal.wait_archived(wal.last_lsn, timeout=None)  # never hangs on a dead worker
    finally:
        fs.clear_faults()
        wal.close()
