"""A rewind (``truncate_after``) racing a barrier: a waiter whose LSN the rewind removed
returns instead of leading barriers for ever, and a barrier's late publication never tells
readers in other processes that LSNs past the rewound durable LSN are durable.

The race is made wide by delaying the barrier's publication (``on_durable``) in the thread
that ran it: a leader descheduled between its fdatasync and its publication."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import segwal
from segwal.storage.lockfile import read_lock


def _log_with_a_slow_publication(path: Path, leader: str) -> segwal.Wal:
    wal = segwal.open(path, sync="never")
    for i in range(100):
        wal.append(b"r%d" % i)
    commit = wal._state.commit
    publish: Callable[[int], None] = commit._on_durable

    def slow(lsn: int) -> None:
        if threading.current_thread().name == leader:
            time.sleep(0.5)
        publish(lsn)

    commit._on_durable = slow
    return wal


def test_a_sync_whose_lsn_a_rewind_removed_returns(tmp_path: Path) -> None:
    wal = _log_with_a_slow_publication(tmp_path / "log", "leader")
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(wal.sync()), name="leader", daemon=True)
    thread.start()
    time.sleep(0.2)  # its barrier ran; its publication is pending
    wal.truncate_after(50)
    thread.join(timeout=10)
    assert not thread.is_alive(), "sync() kept leading barriers for a rewound LSN"
    commit = wal._state.commit
    barriers = commit.barriers
    time.sleep(0.2)
    assert commit.barriers == barriers
    assert done == [50]
    wal.close()


@pytest.mark.timeout(30)
def test_a_late_publication_never_runs_ahead_of_a_rewind(tmp_path: Path) -> None:
    path = tmp_path / "log"
    wal = _log_with_a_slow_publication(path, "leader")
    commit = wal._state.commit
    thread = threading.Thread(target=commit.flush, name="leader")
    thread.start()
    time.sleep(0.2)  # the barrier is done, its publication pending
    wal.truncate_after(50)
    thread.join()
    wal.append(b"new 51, never fdatasynced")
    published = read_lock(wal._state.fs, str(path))
    assert published is not None and published.durable_lsn == 50
    with (
        segwal.open(path, readonly=True) as view,
        pytest.raises(segwal.NotFoundError, match="not durable"),
    ):
        view.read(51)
    wal.close()
