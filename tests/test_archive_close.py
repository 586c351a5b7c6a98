"""The close race (issue 12): ``close()`` gives up on a request that hangs past
``archive_close_timeout`` and leaves the worker thread running; the log reopened in the same
process right then gets a new uploader. The old worker, when its request returns, must not
write ``ARCHIVE.state`` (its state is stale: a lower in-flight mark is the under-estimate
that loses the rewind rule) nor META, nor send anything more."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import segwal
from conftest import payload
from segwal.archive.memory import MemoryStore
from segwal.archive.state import load_state

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 4096}
KEK = bytes(range(32))
KEK2 = bytes(range(1, 33))


def append(wal: segwal.Wal, first: int, count: int) -> None:
    for lsn in range(first, first + count):
        assert wal.append(payload(lsn, 100)) == lsn
    wal.rotate()


def test_a_worker_close_gave_up_on_writes_nothing_after_a_reopen(tmp_path: Path) -> None:
    store = MemoryStore()
    log = tmp_path / "log"
    with segwal.open(log, archive=store, encryption_key=KEK, **FAST) as wal:  # type: ignore[arg-type]
        append(wal, 1, 100)
        assert wal.wait_archived(100, timeout=30)
    segwal.rotate_keys(log, KEK, new_kek=KEK2)  # the next open uploads the new key set
    release = store.hang("put")  # the first PUT after this does not answer until released
    stuck = segwal.open(
        log,
        archive=store,
        encryption_key=KEK2,
        archive_probe=False,
        archive_close_timeout=0.1,
        **FAST,  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 10
    while store.requests["put"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the worker is inside the key set's PUT
    worker = stuck._uploader._thread  # type: ignore[attr-defined]
    assert isinstance(worker, threading.Thread)
    started = time.monotonic()
    stuck.close()
    assert worker.is_alive() and time.monotonic() - started < 1  # close() gave up
    with segwal.open(log, archive=store, encryption_key=KEK2, **FAST) as wal:  # type: ignore[arg-type]
        append(wal, 101, 100)
        assert wal.wait_archived(200, timeout=30)
    state_path = log / "ARCHIVE.state"
    settled = (state_path.read_bytes(), os.stat(state_path).st_ino)
    meta = (log / "META").read_bytes()
    objects = dict(store.objects)
    release.set()  # the old request answers now, after the reopen
    worker.join(10)
    assert not worker.is_alive()
    # The old worker's request returned after the reopen and the new uploader's writes: it
    # wrote nothing (the same file, not a replace with its stale in-flight mark).
    assert (state_path.read_bytes(), os.stat(state_path).st_ino) == settled
    assert (log / "META").read_bytes() == meta and store.objects.keys() == objects.keys()
    state = load_state(str(log))
    assert state is not None and state.in_flight >= 200 and state.keys is not None
    with segwal.open(log, readonly=True, encryption_key=KEK2) as wal:
        assert wal.holds()["archive"] == 201
    assert segwal.verify_archive(store).ok
