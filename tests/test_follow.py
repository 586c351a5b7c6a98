"""Tailing the log with ``follow``: in the writer's process, woken by the writer itself; in
another process, through a readonly open that sees only what the writer made durable.

A follower yields every durable record exactly once, in LSN order, across rotations; it
never yields a record a crash could still take back (unless it asked for unsynced ones),
ends when its timeout passes or the log closes, and raises ReaderFellBehindError when
retention removed what it still needed.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.storage.fileio import OsFileSystem

_GEN = struct.Struct("<IQ")  # generation, LSN: the first 12 bytes of a cross-process payload


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


class Follower:
    """A thread draining ``wal.follow(...)``; it checks each record as it is yielded."""

    def __init__(
        self,
        wal: segwal.Wal,
        from_lsn: int | None = None,
        *,
        timeout: float | None = None,
        unsynced: bool = False,
        check: Callable[[segwal.Record], None] | None = None,
    ) -> None:
        self.records: list[segwal.Record] = []
        self.error: BaseException | None = None
        self.violations: list[str] = []
        self._iterator = wal.follow(from_lsn, timeout=timeout, unsynced=unsynced)
        self._check = check
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for record in self._iterator:
                if self._check is not None:
                    try:
                        self._check(record)
                    except AssertionError as exc:
                        self.violations.append(str(exc))
                self.records.append(record)
        except BaseException as exc:
            self.error = exc

    @property
    def lsns(self) -> list[int]:
        return [r.lsn for r in self.records]

    def wait_count(self, count: int, timeout: float = 10.0) -> None:
        wait_for(lambda: len(self.records) >= count, timeout)

    def join(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "follower did not end"


def blocked_in_condition_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` sleeps in GroupCommit.wait_beyond on a condition (not a poll)."""
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append((Path(frame.f_code.co_filename).name, frame.f_code.co_name))
        frame = frame.f_back
    return ("commit.py", "wait_beyond") in names and ("threading.py", "wait") in names


# -- in-process followers -------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_follower_yields_every_durable_record_once_in_order_while_writers_rotate(
    wal_dir: str, sync: str
) -> None:
    wal = segwal.open(wal_dir, segment_bytes=4096, sync=sync, sync_interval=0.005)  # type: ignore[arg-type]
    written: dict[int, bytes] = {}
    lock = threading.Lock()

    def durable_when_yielded(record: segwal.Record) -> None:
        assert record.lsn <= wal.durable_lsn, f"LSN {record.lsn} yielded before it was durable"

    follower = Follower(wal, 1, check=durable_when_yielded)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(120):
            items = [payload(seed * 100_000 + i * 100 + k) for k in range(rng.randint(1, 12))]
            lsns = wal.append_batch(items) if len(items) > 1 else [wal.append(items[0])]
            with lock:
                written.update(zip(lsns, items, strict=True))
            if sync == "never" and i % 10 == 9:
                wal.sync()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wal.sync()
    last = wal.last_lsn
    wait_for(lambda: len(follower.records) >= last or follower.error is not None)
    wal.close()
    follower.join()
    assert follower.error is None, repr(follower.error)
    assert follower.violations == []
    assert follower.lsns == list(range(1, last + 1))
    assert all(r.payload == written[r.lsn] for r in follower.records)
    assert wal.stats().rotations.get("size", 0) > 10


def test_follower_sleeps_on_the_writers_condition_and_wakes_at_once(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="always") as wal:
        wal.append(b"first")
        follower = Follower(wal)
        wait_for(lambda: len(follower.records) == 1)
        # Idle: the follower is parked on a condition variable, not sleeping in a poll loop.
        wait_for(lambda: blocked_in_condition_wait(follower.thread), timeout=5)
        for _ in range(5):
            time.sleep(0.02)
            assert blocked_in_condition_wait(follower.thread)
        for i in range(20):
            started = time.monotonic()
            wal.append(payload(i))
            follower.wait_count(i + 2, timeout=5)
            assert time.monotonic() - started < 2.0
        assert follower.lsns == list(range(1, 22))
    follower.join()
    assert follower.error is None


def test_never_mode_follower_waits_for_sync(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        follower = Follower(wal, 1)
        wal.append_batch([payload(i) for i in range(1, 11)])
        time.sleep(0.2)
        assert follower.records == []  # written, not durable
        wal.sync()
        wait_for(lambda: len(follower.records) == 10)
        wal.append(b"eleven")
        time.sleep(0.1)
        assert len(follower.records) == 10
    # close() makes the last record durable; the follower may or may not see it before it
    # ends, but it ends, and it never sees anything twice.
    follower.join()
    assert follower.error is None
    assert follower.lsns in (list(range(1, 11)), list(range(1, 12)))


def test_unsynced_follower_yields_written_records(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never", segment_bytes=4096) as wal:
        fast = Follower(wal, 1, unsynced=True)
        slow = Follower(wal, 1)
        for i in range(1, 201):
            wal.append(payload(i, 40))
        wait_for(lambda: len(fast.records) == 200)
        assert wal.durable_lsn < 200
        assert [r.payload for r in fast.records] == [payload(i, 40) for i in range(1, 201)]
        assert all(r.lsn <= wal.durable_lsn for r in slow.records)
        wal.sync()
        wait_for(lambda: len(slow.records) == 200)
    fast.join()
    slow.join()
    assert fast.lsns == slow.lsns == list(range(1, 201))


def test_timeout_ends_the_iteration(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="always") as wal:
        started = time.monotonic()
        assert list(wal.follow(timeout=0.15)) == []
        assert 0.14 <= time.monotonic() - started < 3
        wal.append_batch([b"a", b"b", b"c"])
        started = time.monotonic()
        assert [r.payload for r in wal.follow(2, timeout=0.1)] == [b"b", b"c"]
        assert time.monotonic() - started < 3
        assert list(wal.follow(4, timeout=0)) == []
        # A record arriving within the timeout keeps the iteration going.
        it = wal.follow(4, timeout=2)
        timer = threading.Timer(0.1, wal.append, args=(b"d",))
        timer.start()
        assert next(it).payload == b"d"
        timer.join()


def test_close_ends_a_follower_waiting_for_ever(wal_dir: str) -> None:
    wal = segwal.open(wal_dir, sync="always")
    wal.append(b"x")
    follower = Follower(wal, timeout=None)
    wait_for(lambda: len(follower.records) == 1)
    wait_for(lambda: blocked_in_condition_wait(follower.thread))
    wal.close()
    follower.join(timeout=5)
    assert follower.error is None
    assert follower.lsns == [1]
    with pytest.raises(segwal.ClosedError):
        wal.follow()


def test_follower_that_never_started_falls_behind_a_checkpoint(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048, sync="always") as wal:
        for i in range(1, 201):
            wal.append(payload(i, 60))
        it = wal.follow(1, timeout=0)
        wal.truncate_before(150)
        with pytest.raises(segwal.ReaderFellBehindError, match="starts at LSN 150") as info:
            next(it)
        assert isinstance(info.value, segwal.NotFoundError)
        assert (info.value.lsn, info.value.first_lsn) == (1, 150)


def test_far_behind_follower_finishes_what_it_pinned_then_falls_behind(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048, sync="always", retention_max_bytes=6000) as wal:
        for i in range(1, 61):
            wal.append(payload(i, 60))
        it = wal.follow(wal.first_lsn, timeout=0)
        first = next(it)
        snapshot_last = wal.last_lsn
        # The writer races ahead; retention deletes everything the follower has not seen,
        # the segments it is reading included (their files go when it lets go of them).
        for i in range(61, 400):
            wal.append(payload(i, 60))
        assert wal.first_lsn > snapshot_last + 1
        got = [first.lsn]
        with pytest.raises(segwal.ReaderFellBehindError) as info:
            for record in it:
                assert record.payload == payload(record.lsn, 60)
                got.append(record.lsn)
        # What it had pinned it read whole; then nothing after its snapshot was left.
        assert got == list(range(first.lsn, snapshot_last + 1))
        assert info.value.lsn == snapshot_last + 1
        assert info.value.first_lsn == wal.first_lsn
        # Retention now removes the files it deferred for the reader.
        names = {p.name for p in Path(wal_dir).iterdir() if p.name.endswith(".wal")}
        assert all(int(n[:20]) >= wal.segments()[0].first_lsn for n in names)


def test_follower_reading_slowly_in_a_thread_falls_behind_retention(wal_dir: str) -> None:
    wal = segwal.open(wal_dir, segment_bytes=2048, sync="always", retention_max_bytes=6000)
    gate = threading.Event()

    def slow(record: segwal.Record) -> None:
        gate.wait()

    follower = Follower(wal, 1, check=slow)
    for i in range(1, 400):
        wal.append(payload(i, 60))
    gate.set()
    follower.join()
    wal.close()
    assert isinstance(follower.error, segwal.ReaderFellBehindError)
    assert follower.lsns == list(range(1, len(follower.lsns) + 1))


class ListingHookFS(OsFileSystem):
    """Runs ``hook`` once, right after the next directory listing returns."""

    hook: Callable[[], object] | None = None

    def list_dir(self, path: str):  # type: ignore[no-untyped-def]
        entries = super().list_dir(path)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return entries


def test_readonly_follower_survives_retention_racing_its_directory_listing(
    wal_dir: str,
) -> None:
    with segwal.open(wal_dir, segment_bytes=4096, sync="never") as wal:
        for i in range(1, 301):
            wal.append(payload(i, 50))
        wal.sync()
        assert len(wal.segments()) > 5
        fs = ListingHookFS()
        with segwal.open(wal_dir, readonly=True, filesystem=fs) as ro:
            ahead = ro.follow(250, timeout=0.1)
            behind = ro.follow(5, timeout=0.1)
            fs.hook = lambda: wal.truncate_before(200)
            changed(wal)  # a readonly view plans again (and lists) only after a change
            # The follower at 250 lost nothing it needs: it reads on.
            assert [r.lsn for r in ahead] == list(range(250, 301))
            fs.hook = lambda: wal.truncate_before(220)
            changed(wal)
            with pytest.raises(segwal.ReaderFellBehindError):
                next(behind)
            assert fs.hook is None  # both truncations ran inside a listing


def changed(wal: segwal.Wal) -> None:
    """A change that readonly views see in LOCK, and that moves no LSN."""
    wal.hold("nudge", wal.last_lsn)
    wal.release("nudge")


# -- another process ------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, random, struct, sys, time
    import segwal
    from segwal.storage.fileio import OsFileSystem

    directory = sys.argv[1]
    generation, seed, tear_after = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    GEN = struct.Struct("<IQ")
    out = sys.stdout

    def say(*words):
        out.write(" ".join(map(str, words)) + "\\n")
        out.flush()

    class Tearing(OsFileSystem):
        # After tear_after batches, the next batch's write stops half way and the process
        # waits to be killed: a torn batch whose first half is in the page cache.
        armed = False
        torn = None

        def open_write(self, path):
            handle = super().open_write(path)
            fs = self

            class Handle:
                def __getattr__(self, name):
                    return getattr(handle, name)

                def pwrite(self, data, offset):
                    if fs.armed and len(data) > 512:
                        handle.pwrite(bytes(data)[: len(data) // 2], offset)
                        say("TORN", *fs.torn)
                        time.sleep(60)
                    handle.pwrite(data, offset)

            return Handle()

    fs = Tearing()
    wal = segwal.open(directory, segment_bytes=16384, sync="always", filesystem=fs)
    say("OPEN", wal.last_lsn)
    rng = random.Random(seed)
    batches = 0
    while True:
        first = wal.next_lsn
        count = rng.randint(1, 12)
        items = [GEN.pack(generation, first + i) + bytes(rng.randrange(40, 400))
                 for i in range(count)]
        if tear_after and batches == tear_after:
            items = [GEN.pack(generation, first + i) + bytes(300) for i in range(5)]
            fs.torn = (first, first + len(items) - 1)
            fs.armed = True
        lsns = wal.append_batch(items)
        say("ACK", lsns[-1])
        batches += 1
    """
)


class Child:
    """A writer process; its stdout lines are read by a thread as they come."""

    def __init__(self, script: Path, directory: str, generation: int, tear_after: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                directory,
                str(generation),
                str(generation),
                str(tear_after),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[list[str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def acked(self) -> int:
        return max((int(w[1]) for w in list(self.lines) if w[0] == "ACK"), default=0)

    def first(self, word: str) -> list[str] | None:
        return next((w for w in list(self.lines) if w[0] == word), None)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL, err


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str, int, int], Child]]:
    """Start writer processes; any still running when the test ends is killed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    started: list[Child] = []

    def start(directory: str, generation: int, tear_after: int) -> Child:
        child = Child(script, directory, generation, tear_after)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.proc.stdout is not None and not child.proc.stdout.closed:
            child.kill()


def test_readonly_follower_in_another_process_sees_only_durable_records(
    tmp_path: Path, spawn: Callable[[str, int, int], Child]
) -> None:
    directory = str(tmp_path / "wal")
    owner: dict[int, int] = {}  # LSN -> the generation whose record is the durable one

    # Generation 1 appends across many rotations, then is killed in the middle of a batch.
    one = spawn(directory, 1, 150)
    wait_for(lambda: one.acked() > 0)
    ro = segwal.open(directory, readonly=True)
    follower = Follower(ro, 1, timeout=20)
    wait_for(lambda: one.first("TORN") is not None, timeout=60)
    one.kill()
    torn = one.first("TORN")
    assert torn is not None
    torn_first, torn_last = int(torn[1]), int(torn[2])
    acked_one = one.acked()
    assert acked_one == torn_first - 1  # every batch before the torn one was acknowledged
    wait_for(lambda: len(follower.records) >= acked_one)
    time.sleep(0.3)  # room for a wrong record to show up
    assert max(follower.lsns) < torn_first, "a record of the torn batch was yielded"

    # Generation 2 reopens (recovery cuts the torn batch), appends, and is killed at a random
    # instant, maybe mid-batch.
    two = spawn(directory, 2, 0)
    wait_for(lambda: two.first("OPEN") is not None)
    opened = two.first("OPEN")
    assert opened is not None
    last_one = int(opened[1])
    assert acked_one <= last_one < torn_first
    owner.update(dict.fromkeys(range(1, last_one + 1), 1))
    wait_for(lambda: two.acked() > last_one + 200, timeout=60)
    time.sleep(random.Random(os.getpid()).random() * 0.05)
    two.kill()
    acked_two = two.acked()

    # Generation 3 is this process: it recovers, appends a little and closes cleanly.
    with segwal.open(directory, segment_bytes=16384, sync="always") as wal:
        last_two = wal.last_lsn
        assert last_two >= acked_two
        owner.update(dict.fromkeys(range(last_one + 1, last_two + 1), 2))
        for _ in range(5):
            first = wal.next_lsn
            wal.append_batch([_GEN.pack(3, first + i) + b"3" * 50 for i in range(7)])
        final = wal.last_lsn
        owner.update(dict.fromkeys(range(last_two + 1, final + 1), 3))
        segments = len(wal.segments())

    wait_for(lambda: len(follower.records) >= final or follower.error is not None, timeout=30)
    ro.close()
    follower.join(timeout=30)
    assert follower.error is None, repr(follower.error)
    assert follower.lsns == list(range(1, final + 1))
    for record in follower.records:
        generation, lsn = _GEN.unpack_from(record.payload)
        assert lsn == record.lsn
        assert generation == owner[lsn], (
            f"LSN {lsn}: yielded generation {generation}'s record, the durable one is "
            f"generation {owner[lsn]}'s"
        )
    # The torn batch's LSNs were given to generation 2's records; none of its own survived.
    assert all(owner[lsn] == 2 for lsn in range(torn_first, torn_last + 1) if lsn <= last_two)
    assert segments >= 10
