"""A child forked while other threads read (or append) can still read the log: no lock
that a reading thread held at the fork stays held forever in the child.

Python copies a held ``threading.Lock`` into a child as held, and the thread that would
release it does not exist there, so every lock a read takes must be free at the fork
(``os.register_at_fork``: taken before, released after, in parent and child)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import segwal

RECORDS = 3000
FORKS = 40
CHILD_SECONDS = 10.0  # a child that has not read back by then is stuck


def _write(path: Path) -> None:
    with segwal.open(path, segment_bytes=64 * 1024) as wal:
        for start in range(0, RECORDS, 100):
            wal.append_batch([b"r%05d" % i for i in range(start, start + 100)])


def _child_reads(wal: segwal.Wal) -> int:
    """In the child: a point read, a replay and a batch read; exit 0 when all agree."""
    try:
        ok = wal.read(1234).payload == b"r01233"
        ok = ok and sum(1 for _ in wal.replay(RECORDS - 499, RECORDS)) == 500
        return 0 if ok else 3
    except BaseException as exc:
        os.write(2, f"child: {exc!r}\n".encode())
        return 4


def _fork_while_reading(wal: segwal.Wal, *, appending: bool) -> None:
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            wal.append_batch([b"x" * 300] * 20)
            wal.append(b"y")

    def hammer() -> None:
        lsn = 1
        while not stop.is_set():
            wal.read(lsn)
            for _ in wal.replay(lsn, lsn + 50):
                pass
            lsn = lsn % (RECORDS - 60) + 7

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    if appending:
        threads.append(threading.Thread(target=append))
    for t in threads:
        t.start()
    try:
        for _ in range(FORKS):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                signal.alarm(int(CHILD_SECONDS) + 5)
                os._exit(_child_reads(wal))
            deadline = time.monotonic() + CHILD_SECONDS
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail("a child forked during reads hung on its first read")
                time.sleep(0.01)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()


@pytest.mark.parametrize("readonly", [True, False])
def test_a_child_forked_during_reads_can_read(tmp_path: Path, readonly: bool) -> None:
    _write(tmp_path / "log")
    with segwal.open(tmp_path / "log", readonly=readonly) as wal:
        _fork_while_reading(wal, appending=False)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_child_forked_during_reads_and_appends_can_read(
    tmp_path: Path, compression: str | None
) -> None:
    """The log's lock (held by an append), the group commit's and the compression
    pipeline's are free in the child too; the child may read, never append."""
    _write(tmp_path / "log")
    options = {"compression": compression, "compression_threads": 1} if compression else {}
    with segwal.open(tmp_path / "log", sync="never", **options) as wal:  # type: ignore[arg-type]
        _fork_while_reading(wal, appending=True)
