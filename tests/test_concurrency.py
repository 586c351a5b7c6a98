"""Threads and processes: group commit, concurrent batches, readers beside writers, the lock.

Writer processes are started with ``subprocess`` (not fork) and driven over pipes one line at
a time, so every step is ordered without sleeps; SIGKILL stands in for a process crash.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import payload
from segwal import OsFileSystem, Wal
from segwal.storage.fileio import FileHandle


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads that start together; re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def tag(thread: int, seq: int, index: int = 0) -> bytes:
    return f"t{thread}:s{seq}:i{index}:".encode() + payload(thread * 10_000 + seq, 20)


# -- group commit -----------------------------------------------------------------------------


def test_group_commit_shares_fsyncs(wal_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    threads, per_thread = 16, 60
    got: dict[int, list[int]] = {}
    with segwal.open(wal_dir, sync="always") as wal:

        def work(t: int) -> None:
            lsns = []
            for i in range(per_thread):
                lsn = wal.append(tag(t, i))
                assert wal.durable_lsn >= lsn  # durable when append returns
                lsns.append(lsn)
            got[t] = lsns

        start = time.monotonic()
        run_threads(threads, work)
        elapsed = time.monotonic() - start
        stats = wal.stats()
        total = threads * per_thread
        assert stats.appends == stats.records == total
        with capsys.disabled():
            print(
                f"\ngroup commit: {stats.fsyncs} fsyncs for {stats.appends} appends "
                f"(ratio {stats.fsyncs / stats.appends:.3f}) in {elapsed:.2f}s"
            )
        assert stats.fsyncs < stats.appends / 2
        every = sorted(lsn for lsns in got.values() for lsn in lsns)
        assert every == list(range(1, total + 1))  # unique and contiguous
        for lsns in got.values():
            assert lsns == sorted(lsns)  # each thread's appends in its order
        assert wal.durable_lsn == wal.last_lsn == total
        # read() scans its segment from the start, so check a sample here and all by replay
        for t, lsns in got.items():
            for i in range(0, per_thread, 9):
                assert wal.read(lsns[i]).payload == tag(t, i)
    with segwal.open(wal_dir) as wal:
        records = {r.lsn: r.payload for r in wal.replay()}
        assert len(records) == total
        for t, lsns in got.items():
            assert [records[lsn] for lsn in lsns] == [tag(t, i) for i in range(per_thread)]


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_concurrent_batches_stay_contiguous(wal_dir: str, sync: Any) -> None:
    threads, batches = 8, 25
    results: dict[tuple[int, int], tuple[range, list[bytes]]] = {}
    with segwal.open(wal_dir, sync=sync, sync_interval=0.005, segment_bytes=8192) as wal:

        def work(t: int) -> None:
            rng = random.Random(t)
            for b in range(batches):
                items = [tag(t, b, i) for i in range(rng.randint(0, 12))]
                if rng.random() < 0.2 and items:
                    lsn = wal.append(items[0], type=t)
                    results[t, b] = (range(lsn, lsn + 1), items[:1])
                else:
                    results[t, b] = (wal.append_batch(items, type=t), items)

        run_threads(threads, work)
        assert wal.stats().rotations.get("size", 0) > 3  # rotations raced with appends
        total = sum(len(items) for _r, items in results.values())
        assert wal.last_lsn == total
        wal.sync()
        covered = sorted(lsn for r, _items in results.values() for lsn in r)
        assert covered == list(range(1, total + 1))  # disjoint and complete
        for (t, _b), (r, items) in results.items():
            assert len(r) == len(items)
            records = list(wal.replay(r.start, r.stop - 1))
            assert [x.payload for x in records] == items
            assert {x.type for x in records} <= {t}
            assert len({x.timestamp_us for x in records}) <= 1  # one batch, one stamp
    with segwal.open(wal_dir) as wal:
        assert [r.lsn for r in wal.replay()] == list(range(1, total + 1))


def test_wait_durable_from_many_threads_in_interval_mode(wal_dir: str) -> None:
    threads, per_thread = 8, 15
    with segwal.open(wal_dir, sync="interval", sync_interval=0.01) as wal:

        def work(t: int) -> None:
            for i in range(per_thread):
                lsn = wal.append(tag(t, i))
                assert wal.wait_durable(lsn, timeout=10) is True
                assert wal.durable_lsn >= lsn
                assert wal.read(lsn).payload == tag(t, i)

        run_threads(threads, work)
        stats = wal.stats()
        assert stats.appends == threads * per_thread
        assert stats.fsyncs < stats.appends
        assert wal.durable_lsn == wal.last_lsn


def test_sync_from_many_threads_in_never_mode(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:

        def work(t: int) -> None:
            for i in range(20):
                lsn = wal.append(tag(t, i))
                if i % 5 == 4:
                    assert wal.sync() >= lsn
                    assert wal.durable_lsn >= lsn

        run_threads(8, work)
        assert wal.stats().fsyncs <= 8 * 4
        assert wal.sync() == wal.last_lsn == 160


# -- readers beside writers -------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["always", "never"])
def test_a_reader_replaying_during_appends_sees_a_prefix(wal_dir: str, sync: Any) -> None:
    writers, per_writer = 4, 80
    snapshots: list[tuple[int, list[tuple[int, bytes]]]] = []
    with segwal.open(wal_dir, sync=sync, segment_bytes=2048) as wal:
        done = threading.Event()

        def read_loop() -> None:
            while not done.is_set():
                records = [(r.lsn, r.payload) for r in wal.replay()]
                snapshots.append((wal.durable_lsn, records))
                if records:
                    lsn = random.randint(1, records[-1][0])
                    assert wal.read(lsn).payload == records[lsn - 1][1]

        def write(t: int) -> None:
            for i in range(per_writer):
                wal.append(tag(t, i))
                if sync == "never" and i % 10 == 9:
                    wal.sync()

        reader = threading.Thread(target=read_loop)
        reader.start()
        try:
            run_threads(writers, write)
        finally:
            done.set()
            reader.join(timeout=60)
        assert not reader.is_alive()
        final = [(r.lsn, r.payload) for r in wal.replay(unsynced=True)]
        assert len(final) == writers * per_writer
        assert wal.stats().rotations.get("size", 0) > 3
    assert len(snapshots) > 1
    lengths = [len(records) for _d, records in snapshots]
    assert lengths == sorted(lengths)  # never goes back
    for durable_after, records in snapshots:
        assert records == final[: len(records)]  # a prefix, byte for byte
        assert len(records) <= durable_after  # only durable records were visible


def test_replay_iterator_is_bounded_at_creation(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        for lsn in range(1, 21):
            wal.append(payload(lsn))
        it = wal.replay()
        first = next(it)
        for lsn in range(21, 41):
            wal.append(payload(lsn))
        rest = list(it)
        assert [r.lsn for r in [first, *rest]] == list(range(1, 21))


# -- processes --------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    import segwal

    path, sync, segment_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wal = segwal.open(path, sync=sync, segment_bytes=segment_bytes)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "append":
            first, count = int(args[0]), int(args[1])
            for lsn in range(first, first + count):
                assert wal.append(bytes([lsn % 256]) * (lsn % 50)) == lsn
        elif cmd == "sync":
            wal.sync()
        elif cmd == "rotate":
            wal.rotate()
        elif cmd == "close":
            wal.close()
            print("closed", flush=True)
            break
        print("ok", wal.last_lsn, wal.durable_lsn, flush=True)
    """
)


def child_payload(lsn: int) -> bytes:
    return bytes([lsn % 256]) * (lsn % 50)


class Child:
    """A writer in another process, one command per line."""

    def __init__(self, path: str, sync: str = "always", segment_bytes: int = 64 << 20) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, path, sync, str(segment_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.expect() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the child did not answer"
        line = self.proc.stdout.readline()
        assert line, f"the child exited with {self.proc.wait()}"
        return line.strip()

    def do(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.stop()

    def stop(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(path: str, sync: str = "always", segment_bytes: int = 64 << 20) -> Child:
        child = Child(path, sync, segment_bytes)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


@pytest.mark.parametrize("ending", ["close", "sigkill"])
def test_second_writer_in_another_process_gets_lock_error(
    wal_dir: str, spawn: Callable[..., Child], ending: str
) -> None:
    child = spawn(wal_dir)
    assert child.do("append 1 5") == "ok 5 5"
    with pytest.raises(segwal.LockError) as info:
        segwal.open(wal_dir)
    assert info.value.pid == child.pid
    assert info.value.path == wal_dir
    assert str(child.pid) in str(info.value)
    with pytest.raises(segwal.LockError):
        segwal.open(wal_dir, sync="never")  # the lock does not depend on options
    if ending == "close":
        assert child.do("close") == "closed"
        assert child.proc.wait(timeout=30) == 0
    else:
        child.kill()
    with segwal.open(wal_dir) as wal:
        assert [r.payload for r in wal.replay()] == [child_payload(n) for n in range(1, 6)]
        wal.append(child_payload(6))
    child = spawn(wal_dir)  # and the next process can take it again
    assert child.do("append 7 1") == "ok 7 7"


def test_readonly_beside_a_writer_process_sees_the_durable_prefix(
    wal_dir: str, spawn: Callable[..., Child]
) -> None:
    child = spawn(wal_dir, "never")
    assert child.do("append 1 10") == "ok 10 0"
    assert child.do("sync") == "ok 10 10"
    assert child.do("append 11 5") == "ok 15 10"
    with segwal.open(wal_dir, readonly=True) as ro:
        assert ro.durable_lsn == 10
        assert [(r.lsn, r.payload) for r in ro.replay()] == [
            (n, child_payload(n)) for n in range(1, 11)
        ]
        assert ro.read(10).payload == child_payload(10)
        with pytest.raises(segwal.NotFoundError):
            ro.read(11)
        assert ro.read(11, unsynced=True).payload == child_payload(11)
        assert ro.wait_durable(10) is True
        assert ro.wait_durable(11, timeout=0) is False

        assert child.do("sync") == "ok 15 15"
        assert child.do("append 16 3") == "ok 18 15"
        # read and replay look again; refresh() updates the watermarks
        assert [r.lsn for r in ro.replay()] == list(range(1, 16))
        ro.refresh()
        assert ro.durable_lsn == 15
        assert ro.last_lsn >= 15

        assert child.do("close") == "closed"
        assert child.proc.wait(timeout=30) == 0
        ro.refresh()
        assert ro.durable_lsn == ro.last_lsn == 18
        assert [r.payload for r in ro.replay()] == [child_payload(n) for n in range(1, 19)]


def test_readonly_beside_a_writer_that_rotates(wal_dir: str, spawn: Callable[..., Child]) -> None:
    child = spawn(wal_dir, "always", 1024)
    with segwal.open(wal_dir, readonly=True) as ro:
        for round_ in range(12):
            first = round_ * 7 + 1
            assert child.do(f"append {first} 7") == f"ok {first + 6} {first + 6}"
            if round_ % 3 == 2:
                child.do("rotate")
            records = list(ro.replay())
            assert [(r.lsn, r.payload) for r in records] == [
                (n, child_payload(n)) for n in range(1, first + 7)
            ]
            infos = ro.segments()
            assert [s.first_lsn for s in infos[1:]] == [s.last_lsn + 1 for s in infos[:-1]]
        assert len(ro.segments()) > 5


def test_readonly_after_a_writer_was_killed_sees_only_what_it_made_durable(
    wal_dir: str, spawn: Callable[..., Child]
) -> None:
    child = spawn(wal_dir, "never")
    assert child.do("append 1 10") == "ok 10 0"
    assert child.do("sync") == "ok 10 10"
    assert child.do("append 11 5") == "ok 15 10"
    child.kill()
    with segwal.open(wal_dir, readonly=True) as ro:
        assert ro.durable_lsn == 10
        assert [r.lsn for r in ro.replay()] == list(range(1, 11))


class _LockSpyFs:
    """The real file system, counting every lock a caller takes."""

    def __init__(self) -> None:
        self._fs = OsFileSystem()
        self.locks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def lock(self, path: str, *, exclusive: bool) -> FileHandle | None:
        self.locks += 1
        return self._fs.lock(path, exclusive=exclusive)


def test_a_reader_never_takes_the_lock_so_it_cannot_block_a_writer(wal_dir: str) -> None:
    # Readers learn the durable LSN from what the writer publishes in LOCK, without any
    # flock of their own: a writer opening at any instant never meets a reader's lock.
    with segwal.open(wal_dir) as wal:
        wal.append(b"x")
    fs = _LockSpyFs()
    ro = segwal.open(wal_dir, readonly=True, filesystem=fs)  # type: ignore[arg-type]
    try:
        with segwal.open(wal_dir) as wal:
            ro.refresh()
            wal.append(b"y")
            ro.refresh()
            assert [r.lsn for r in ro.replay()] == [1, 2]
        assert fs.locks == 0
    finally:
        ro.close()


def test_many_readers_in_threads_beside_one_writer_process(
    wal_dir: str, spawn: Callable[..., Child]
) -> None:
    child = spawn(wal_dir)
    assert child.do("append 1 20") == "ok 20 20"
    readers = [segwal.open(wal_dir, readonly=True) for _ in range(4)]
    try:
        stop = threading.Event()

        def read(i: int) -> None:
            ro: Wal = readers[i]
            last = 0
            while not stop.is_set():
                records = list(ro.replay())
                assert [r.lsn for r in records] == list(range(1, len(records) + 1))
                assert all(r.payload == child_payload(r.lsn) for r in records)
                assert len(records) >= last
                last = len(records)

        errors: list[BaseException] = []

        def guarded(i: int) -> None:
            try:
                read(i)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=guarded, args=(i,)) for i in range(len(readers))]
        for t in threads:
            t.start()
        for first in range(21, 121, 10):
            assert child.do(f"append {first} 10") == f"ok {first + 9} {first + 9}"
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[0]
    finally:
        for ro in readers:
            ro.close()


def test_lock_file_is_not_a_segment(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with segwal.open(path) as wal:
        wal.append(b"x")
        assert sorted(os.listdir(path)) == ["00000000000000000001.wal", "LOCK"]
    report = segwal.verify(path)
    assert report.ok
    assert report.records == 1
