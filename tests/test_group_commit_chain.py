"""GroupCommit's chain of wake-ups: the waiters a barrier covered are woken two at a time,
each woken one waking the next as it resumes, and the chain never stops at a waiter that
left (timed out) or for a failure. Real threads; the chain is held still by holding the
group commit's mutex in the leader's publication (``on_durable`` runs after the wake-ups,
under no lock)."""

from __future__ import annotations

import threading
import time

import pytest

from segwal.errors import WalFailedError
from segwal.log.commit import GroupCommit


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Harness:
    """A group commit whose first barrier the test opens, and whose first publication holds
    the mutex (so the chain cannot move) until the test lets it go."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.hold = threading.Event()  # set: the first publication holds the mutex
        self.held = threading.Event()  # the mutex is held by that publication
        self.resume = threading.Event()
        self.barriers = 0
        self.fail: BaseException | None = None
        self.commit = GroupCommit(
            durable_lsn=0,
            barrier=self.barrier,
            on_durable=self.published,
            on_failure=lambda exc: None,
        )
        self.out: dict[int, object] = {}
        self.threads: list[threading.Thread] = []

    def barrier(self) -> None:
        self.barriers += 1
        assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail

    def published(self, lsn: int) -> None:
        if self.hold.is_set():
            self.hold.clear()
            with self.commit._mutex:
                self.held.set()
                assert self.resume.wait(10)

    def start(self, lsn: int, timeout: float | None = None) -> None:
        def run() -> None:
            try:
                self.out[lsn] = self.commit.wait_durable(lsn, lead=True, timeout=timeout)
            except BaseException as exc:
                self.out[lsn] = exc

        if lsn > self.commit.written_lsn:
            self.commit.wrote(lsn)
        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def covered_by_one_barrier(h: Harness, timeouts: dict[int, float]) -> None:
    """LSN 1 leads a barrier held open that covers LSNs 1..5 (written before it started);
    LSNs 2..5 queue behind it; the barrier ends, and its publication holds the mutex."""
    h.gate.clear()
    h.commit.wrote(5)
    h.hold.set()
    h.start(1)
    wait_until(lambda: h.barriers == 1)
    for lsn in range(2, 6):
        h.start(lsn, timeouts.get(lsn))
    wait_until(lambda: len(h.commit._queue) == 4)
    h.gate.set()
    assert h.held.wait(10)
    assert h.commit.durable_lsn == 5


def test_covered_waiters_are_woken_two_at_a_time() -> None:
    h = Harness()
    covered_by_one_barrier(h, {})
    commit = h.commit
    # LSNs 2 and 3 are woken (each wakes the next once it has the mutex); 4 and 5 sleep on.
    assert len(commit._batons) == 2
    assert [entry[0] for entry in commit._ready] == [4, 5]
    h.resume.set()
    h.join()
    assert h.out == {1: True, 2: True, 3: True, 4: True, 5: True}
    assert not commit._ready and not commit._batons and not commit._queue
    assert h.barriers == 1


def test_the_chain_skips_a_covered_waiter_that_timed_out_before_it_was_woken() -> None:
    h = Harness()
    covered_by_one_barrier(h, {4: 0.3})
    time.sleep(0.5)  # LSN 4 times out while asleep in the chain, covered
    h.resume.set()
    h.join()
    commit = h.commit
    assert h.out == {1: True, 2: True, 3: True, 4: True, 5: True}
    assert not commit._ready and not commit._batons and not commit._queue
    assert h.barriers == 1


def test_a_failure_while_the_chain_is_held_strands_nobody() -> None:
    h = Harness()
    covered_by_one_barrier(h, {})
    failing = threading.Thread(target=h.commit.fail, args=(OSError(5, "EIO"),))
    failing.start()  # waits for the mutex; it may wake the chain's waiters before it does
    time.sleep(0.05)
    h.resume.set()
    failing.join(10)
    h.join()
    assert h.out == {1: True, 2: True, 3: True, 4: True, 5: True}  # covered before it
    assert not h.commit._ready and not h.commit._batons and not h.commit._queue
    h.commit.wrote(6)
    with pytest.raises(WalFailedError):
        h.commit.wait_durable(6, lead=True)


def test_many_threads_with_timeouts_leave_nobody_asleep() -> None:
    lock = threading.Lock()
    state = {"next": 0}
    errors: list[BaseException] = []

    def barrier() -> None:
        time.sleep(0.0003)

    commit = GroupCommit(
        durable_lsn=0, barrier=barrier, on_durable=lambda lsn: None, on_failure=lambda e: None
    )

    def appender(i: int) -> None:
        try:
            for k in range(150):
                with lock:
                    state["next"] += 1
                    lsn = state["next"]
                    commit.wrote(lsn)
                # Some waiters give up early (timeouts of 0 to 0.4 ms), and then wait again.
                timeout = (k % 5) * 0.0001 if i % 3 == 0 else None
                if not commit.wait_durable(lsn, lead=True, timeout=timeout):
                    assert commit.wait_durable(lsn, lead=True)
                assert commit.durable_lsn >= lsn
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert not errors
    assert commit.durable_lsn == 24 * 150
    assert not commit._queue and not commit._ready and not commit._batons
