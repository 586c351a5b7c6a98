"""GroupCommit on its own: one barrier at a time, covered waiters released, a next leader
chosen among the rest, timeouts that leave nobody stranded. Real threads, a barrier that
the test holds open with an event."""

from __future__ import annotations

import threading
import time

import pytest

from segwal.errors import WalFailedError
from segwal.log.commit import GroupCommit


class Disk:
    """A barrier the test can hold open, that notes how many run at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.fail: BaseException | None = None
        self.lock = threading.Lock()
        self.published: list[int] = []
        self.delay = 0.0  # seconds a barrier takes, like an fdatasync

    def barrier(self) -> None:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        try:
            assert self.gate.wait(10)
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
        finally:
            with self.lock:
                self.running -= 1


def commit_for(disk: Disk) -> GroupCommit:
    return GroupCommit(
        durable_lsn=0,
        barrier=disk.barrier,
        on_durable=disk.published.append,
        on_failure=lambda exc: None,
    )


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def start(commit: GroupCommit, lsn: int, out: dict[int, object], **kw: object) -> threading.Thread:
    def run() -> None:
        try:
            out[lsn] = commit.wait_durable(lsn, lead=True, **kw)  # type: ignore[arg-type]
        except BaseException as exc:
            out[lsn] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_waiters_behind_a_barrier_share_the_next_one() -> None:
    disk = Disk()
    commit = commit_for(disk)
    out: dict[int, object] = {}
    disk.gate.clear()
    commit.wrote(1)
    first = start(commit, 1, out)
    wait_until(lambda: disk.running == 1)
    threads = []
    for lsn in (2, 3, 4):
        commit.wrote(lsn)
        threads.append(start(commit, lsn, out))
    wait_until(lambda: len(commit._queue) == 3)  # queued, none woken while the barrier runs
    disk.gate.set()
    for thread in (first, *threads):
        thread.join(10)
    assert out == {1: True, 2: True, 3: True, 4: True}
    assert disk.calls == 2  # the first covered LSN 1; one more (led by LSN 2) covered 2..4
    assert disk.most == 1
    assert commit.durable_lsn == 4
    assert disk.published == [1, 4]
    assert not commit._queue


def test_many_threads_get_every_lsn_durable_one_barrier_at_a_time() -> None:
    disk = Disk()
    disk.delay = 0.0005
    commit = commit_for(disk)
    lock = threading.Lock()
    state = {"next": 0}
    errors: list[BaseException] = []

    def appender() -> None:
        try:
            for _ in range(200):
                with lock:  # the log's lock: LSNs are written in order
                    state["next"] += 1
                    lsn = state["next"]
                    commit.wrote(lsn)
                assert commit.wait_durable(lsn, lead=True)
                assert commit.durable_lsn >= lsn
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert commit.durable_lsn == 16 * 200
    assert disk.most == 1
    assert disk.calls < 16 * 200  # barriers were shared
    assert not commit._queue


def test_a_waiter_that_times_out_leaves_the_others_a_leader() -> None:
    disk = Disk()
    commit = commit_for(disk)
    out: dict[int, object] = {}
    disk.gate.clear()
    commit.wrote(1)
    first = start(commit, 1, out)
    wait_until(lambda: disk.running == 1)
    commit.wrote(2)
    quitter = start(commit, 2, out, timeout=0.05)
    quitter.join(10)
    assert out[2] is False
    commit.wrote(3)
    last = start(commit, 3, out)
    wait_until(lambda: len(commit._queue) == 1)
    disk.gate.set()
    first.join(10)
    last.join(10)
    assert out[1] is True and out[3] is True
    assert commit.durable_lsn == 3


def test_a_failed_barrier_fails_every_waiter() -> None:
    disk = Disk()
    commit = commit_for(disk)
    out: dict[int, object] = {}
    disk.gate.clear()
    disk.fail = OSError(5, "EIO")
    commit.wrote(1)
    first = start(commit, 1, out)
    wait_until(lambda: disk.running == 1)
    commit.wrote(2)
    second = start(commit, 2, out)
    wait_until(lambda: len(commit._queue) == 1)
    disk.gate.set()
    first.join(10)
    second.join(10)
    assert isinstance(out[1], OSError)
    assert isinstance(out[2], WalFailedError)
    with pytest.raises(WalFailedError):
        commit.wait_durable(2, lead=True)
    assert commit.durable_lsn == 0
