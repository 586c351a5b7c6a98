"""The compiled single append (``FastAppender``, format/_appender.c) against the Python
fast path (log/appender.py, the reference, what ``SEGWAL_PURE_PYTHON=1`` runs) and the
general path: the same appends through each leave byte-identical files and return the same
LSNs, stats and errors, across rotation, bad arguments, a closed log, failed writes (a real
descriptor on /dev/full, the memfs's fault injection), reopen and fork; readers and a
concurrent rotation see the writer's fields exact after every compiled append; and the C
code runs clean under valgrind memcheck.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock
from memcheck import run_memcheck
from segwal.errors import ForkedError, StorageError, WalFailedError
from segwal.format import encoder
from segwal.log import appender as appender_module
from segwal.log import fastpath
from segwal.log.appender import Appender
from segwal.testing import MemoryFileSystem

FIXED_LOG_ID = uuid.UUID(int=0x5E6A1_0000_0000_0000_0000_0000_0042)
COMPILED = encoder.FastAppender is not None
MODES = ["compiled", "python", "general"]
AVAILABLE = MODES if COMPILED else MODES[1:]


def _never_eligible(self: Appender, writer: Any) -> None:
    self._fast_writer = appender_module._NOBODY


@contextmanager
def _path(name: str) -> Iterator[None]:
    """Single appends take this path meanwhile: the C object, the Python fast path (the
    reference), or none (the general path); the log id fixed, so files compare equal."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: FIXED_LOG_ID)
        if name != "compiled":
            patch.setattr(fastpath, "FastAppender", None)
        if name == "general":
            patch.setattr(Appender, "_eligible", _never_eligible)
        yield


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name not in AVAILABLE:
        pytest.skip("segwal.format._encode is not built (or SEGWAL_PURE_PYTHON is set)")
    with _path(name):
        yield name


def _fast_kind(wal: Any) -> str:
    appender = wal._appender
    if appender._fast is not None:
        return "compiled" if appender._fast.writer is not None else "general"
    return "general" if appender._fast_writer is appender_module._NOBODY else "python"


def _attempt(call: Callable[..., int], *args: Any, **kwargs: Any) -> object:
    """A call's result (an LSN), or its exception's type and message (both must agree)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _stats(wal: Any) -> tuple[int, ...]:
    s = wal.stats()
    return (
        s.appends,
        s.records,
        s.payload_bytes,
        s.written_bytes,
        s.writes,
        s.segments,
        s.last_lsn,
        s.durable_lsn,
        s.log_bytes,
        sum(s.rotations.values()),
    )


def _session(wal: Any, clock: FakeClock, start: int, seen: list[object]) -> None:
    """Appends of sizes around the frame's steps and the segment's end, every error an
    append can meet, a batch between, a rotation; each append read back at once."""
    for i in range(start, start + 260):
        size = (i * 53) % 900
        payload = bytes([i % 251]) * size
        lsn = _attempt(wal.append, payload, type=i % 4)
        seen.append(lsn)
        if isinstance(lsn, int) and i % 7 == 0:
            assert (
                wal.read(lsn, unsynced=True).payload == payload
            )  # the sparse index and offset are exact
        if i % 40 == 39:
            clock.advance(-1.0)  # stamps never decrease, on every path
        clock.advance(0.002)
        if i == start + 100:
            seen.append(list(wal.append_batch([b"b1", b"b2"], type=3)))
            seen.append(_attempt(wal.append, b"t", 9))  # positional type
        if i == start + 150:
            info = wal.rotate()
            assert info is not None
            seen.append((os.path.basename(info.path), info.size_bytes, info.digest))
    seen.append(_index(wal))  # after a single append: the fast path's, where one is taken
    for args, kwargs in (
        ((b"x" * 2000,), {}),  # over max_record_bytes
        ((b"x",), {"type": 1 << 16}),
        ((b"x",), {"type": -1}),
        ((b"x",), {"type": True}),
        ((b"x",), {"type": 2**70}),
        (("text",), {}),
        ((b"x", 1, 2), {}),
        ((b"x",), {"kind": 1}),
        ((), {}),
        ((memoryview(b"view"),), {"type": 2}),  # not bytes: the general path
    ):
        seen.append(_attempt(wal.append, *args, **kwargs))
    seen.append(_stats(wal))


def _index(wal: Any) -> tuple[object, ...]:
    """The active segment's sparse index: its class and every entry (the compiled path
    adds them itself, without SparseIndex.add); a direct_io writer's partial last block as
    its DirectTail holds it (the compiled path writes it back); and the segment's whole
    file as it is before a close trims it (a direct write's zero padding included)."""
    writer = wal._state.writer
    index = writer.index
    tail = None if writer.direct is None else writer.direct.tail
    handle = writer.handle
    return (
        type(index).__name__,
        index.lsns[:],
        index.offsets[:],
        index.stamps[:],
        index._next,
        tail,
        handle.pread(handle.size(), 0),
    )


def _run(
    path: str, *, sync: str, fs: MemoryFileSystem | None = None, direct: bool = False
) -> tuple[list[object], list[str]]:
    """The sessions' outcomes, and which path each session's log was on at its end."""
    clock = FakeClock()
    seen: list[object] = []
    options: dict[str, Any] = dict(
        sync=sync, clock=clock, segment_bytes=16384, max_record_bytes=1500, direct_io=direct
    )
    if fs is not None:
        options["filesystem"] = fs
    wal = segwal.open(path, **options)
    _session(wal, clock, 0, seen)
    taken = [_fast_kind(wal)]
    wal.close()
    seen.append(_attempt(wal.append, b"closed"))
    with segwal.open(path, **options) as wal:  # reopen: the tail segment goes on
        _session(wal, clock, 1000, seen)
        taken.append(_fast_kind(wal))
    return seen, taken


def _tree(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("sync", ["never", "always"])
@pytest.mark.parametrize("where", ["disk", "memory"])
def test_every_path_writes_the_same_bytes(
    tmp_path: Path, sync: str, where: str, direct: bool
) -> None:
    """direct: direct_io=True, whose blocks the compiled path writes itself on a real
    O_DIRECT descriptor (format/_direct.c) and through DirectTail.put on the memfs; the
    Python fast path leaves those appends to the general path."""
    runs: dict[str, tuple[list[object], dict[str, bytes | None]]] = {}
    for name in AVAILABLE:
        with _path(name):
            if where == "disk":
                # One path for every run (errors name it), moved aside afterwards.
                seen, taken = _run(str(tmp_path / "log"), sync=sync, direct=direct)
                (tmp_path / "log").rename(tmp_path / name)
                files: dict[str, bytes | None] = dict(_tree(tmp_path / name))
                files.pop("LOCK")  # holds the writer's pid
            else:
                fs = MemoryFileSystem()
                seen, taken = _run("/log", sync=sync, fs=fs, direct=direct)
                files = {k: v for k, v in fs.tree("/log").items() if not k.endswith("LOCK")}
        expected = "general" if direct and name == "python" else name
        assert taken == [expected, expected]  # the path under test was the one taken
        runs[name] = (seen, files)
    ref_seen, ref_files = runs["python"]
    assert any(isinstance(x, tuple) and x[0] == "ClosedError" for x in ref_seen)
    for name, (seen, files) in runs.items():
        assert seen == ref_seen, name
        assert sorted(files) == sorted(ref_files), name
        for file in files:
            assert files[file] == ref_files[file], (name, file)


def _disk_failure(path: Path, direct: bool) -> tuple[object, ...]:
    """ENOSPC on the segment's descriptor (/dev/full dup'ed over it; with direct_io, over
    the O_DIRECT one), then the failed log."""
    wal = segwal.open(path, sync="never", clock=FakeClock(), direct_io=direct)
    wal.append(b"a")
    wal.append(b"b")
    writer = wal._appender._state.writer  # type: ignore[union-attr]
    fd = writer.direct.fd if direct else writer.handle.fd
    saved, full = os.dup(fd), os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, fd)
        with pytest.raises(StorageError) as info:
            wal.append(b"c")
        error = info.value
        assert isinstance(error.__cause__, OSError)
        with pytest.raises(WalFailedError):
            wal.append(b"d")
        stats = _stats(wal)
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(full)
        wal.close()
    with segwal.open(path, sync="never") as wal:
        payloads = [r.payload for r in wal.replay()]
        assert wal.append(b"e") == len(payloads) + 1
    return (error.errno, error.op, error.path == writer.path, stats, payloads)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_a_failed_write_fails_the_log_alike(tmp_path: Path, mode: str, direct: bool) -> None:
    got = _disk_failure(tmp_path / "log", direct)
    # The unsynced a and b are cut (discard_unsynced) where the truncate can reach the file:
    # with direct_io it goes through the buffered descriptor, which /dev/full did not replace.
    assert got == (errno.ENOSPC, "write", True, got[3], [] if direct else [b"a", b"b"])
    assert got[3][4] == 2  # writes: the failed one is not counted


def _memory_failure(nth: int) -> tuple[object, ...]:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, sync="never", clock=FakeClock())
    for i in range(5):
        wal.append(b"r%d" % i)
    wal.sync()  # durable: these survive the failure; the next, unsynced, append does not
    fs.fail("write", nth=nth, error=errno.EIO)
    outcomes = [_attempt(wal.append, b"x" * 50) for _ in range(3)]
    stats = _stats(wal)
    wal.close()
    with segwal.open("/log", filesystem=fs, sync="never") as wal:
        payloads = [r.payload for r in wal.replay()]
    return (outcomes, stats, payloads)


def test_a_failed_write_in_memory_fails_the_log_alike() -> None:
    runs = {}
    for name in AVAILABLE:
        with _path(name):
            runs[name] = _memory_failure(2)
    outcomes = runs["python"][0]
    assert isinstance(outcomes, list) and outcomes[0] == 6
    assert outcomes[1][0] == "StorageError" and outcomes[2][0] == "WalFailedError"
    assert runs["python"][2] == [b"r%d" % i for i in range(5)]
    for name, got in runs.items():
        assert got == runs["python"], name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_refused_alike(tmp_path: Path, mode: str) -> None:
    with segwal.open(tmp_path / "log", sync="never") as wal:
        wal.append(b"a")
        wal.append(b"b")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                wal.append(b"child")
            except ForkedError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert wal.append(b"c") == 3
    with segwal.open(tmp_path / "log", readonly=True) as view:
        assert [r.payload for r in view.replay()] == [b"a", b"b", b"c"]


def test_appends_race_rotations_and_reads(tmp_path: Path, mode: str) -> None:
    """Four threads append while one rotates and syncs and one reads: the lock excludes
    them, so every LSN is taken once, every record reads back and the files verify."""
    path = tmp_path / "log"
    lsns: list[list[int]] = [[] for _ in range(4)]
    with segwal.open(path, sync="never", segment_bytes=1 << 16) as wal:
        stop = threading.Event()

        def appender(k: int) -> None:
            for i in range(1500):
                lsns[k].append(wal.append(b"%d:%d" % (k, i) + b"." * (i % 200), type=k))

        def rotator() -> None:
            while not stop.is_set():
                wal.rotate()
                wal.sync()

        def reader() -> None:
            while not stop.is_set():
                last = wal.last_lsn
                if last:
                    assert wal.read(last, unsynced=True).lsn == last

        side = [threading.Thread(target=rotator), threading.Thread(target=reader)]
        workers = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
        for t in side + workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        for t in side:
            t.join()
        stats = wal.stats()
    every = sorted(lsn for part in lsns for lsn in part)
    assert every == list(range(1, 6001))
    assert stats.appends == stats.records == 6000
    with segwal.open(path, readonly=True) as view:
        records = {r.lsn: r for r in view.replay()}
    for k, part in enumerate(lsns):
        for i, lsn in enumerate(part):
            assert records[lsn].payload == b"%d:%d" % (k, i) + b"." * (i % 200)
            assert records[lsn].type == k
    assert segwal.verify(path).ok


def test_a_follower_of_unsynced_records_is_woken_by_each_append(tmp_path: Path, mode: str) -> None:
    """A follower waiting for written (not durable) records sleeps on the group commit's
    condition: each fast append must wake it (GroupCommit.wrote when a watcher waits), or
    it would sleep out its minute-long timeout, far past the join's 10 s."""
    with segwal.open(tmp_path / "log", sync="never") as wal:
        wal.append(b"first")
        got: list[bytes] = []
        ready = threading.Event()

        def follower() -> None:
            for record in wal.follow(1, timeout=60.0, unsynced=True):
                got.append(record.payload)
                ready.set()
                if len(got) == 21:
                    return

        thread = threading.Thread(target=follower)
        thread.start()
        assert ready.wait(5.0)
        for i in range(20):
            wal.append(b"r%d" % i)
            time.sleep(0.002)  # the follower is back asleep on the condition
        thread.join(10.0)
        assert not thread.is_alive()
        assert got == [b"first"] + [b"r%d" % i for i in range(20)]
        assert _fast_kind(wal) == mode


# --- valgrind --------------------------------------------------------------------------------

MEMCHECK_SCRIPT = """
import errno, os, sys, tempfile, threading
import segwal
from segwal.errors import SegwalError
from segwal.testing import MemoryFileSystem
base = tempfile.mkdtemp()
def session(wal, n):
    for i in range(n):
        wal.append(bytes([i % 256]) * ((i * 97) % 9000), type=i % 3)  # stack and heap frames
    for bad in ((b"x", 1 << 16), (b"x", -1), ("s", 0), (b"x" * 70000, 0), (b"x", 2**70)):
        try:
            wal.append(*bad)
        except (SegwalError, TypeError, ValueError):
            pass
    try:
        wal.append(b"x", kind=1)
    except TypeError:
        pass
    wal.append(b"kw", type=5)
for sync in ("never", "always"):
    for direct in (False, True):  # direct: format/_direct.c's aligned blocks
        with segwal.open(base + "/" + sync + str(direct), sync=sync, segment_bytes=1 << 16,
                         max_record_bytes=65536, direct_io=direct) as wal:
            assert wal._appender._fast is not None
            session(wal, 120)
            assert wal._appender._fast.writer is not None
big = [False]
with segwal.open(base + "/clock", sync="never",
                 clock=lambda: 2**65 if big[0] else 1_700_000_000_000_000) as wal:
    wal.append(b"a")
    wal.append(b"b")
    big[0] = True
    try:
        wal.append(b"c")
    except (SegwalError, ValueError, OverflowError):
        pass
    big[0] = False
fs = MemoryFileSystem()
wal = segwal.open("/m", filesystem=fs, sync="never", segment_bytes=1 << 16)
session(wal, 60)
fs.fail("write", nth=1, error=errno.EIO)
for _ in range(2):
    try:
        wal.append(b"after")
    except SegwalError:
        pass
wal.close()
wal = segwal.open(base + "/full", sync="never")
wal.append(b"a")
wal.append(b"b")
fd = wal._appender._state.writer.handle.fd
saved, full = os.dup(fd), os.open("/dev/full", os.O_WRONLY)
os.dup2(full, fd)
try:
    wal.append(b"c")
except SegwalError:
    pass
os.dup2(saved, fd)
wal.close()
wal = segwal.open(base + "/fulldirect", sync="never", direct_io=True)
wal.append(b"a")
wal.append(b"b")
fd = wal._appender._state.writer.direct.fd
os.dup2(full, fd)
try:
    wal.append(b"c")
except SegwalError:
    pass
wal.close()
print("memcheck-script-done")
"""


@pytest.mark.skipif(not COMPILED, reason="segwal.format._encode is not built")
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.timeout(300)
def test_valgrind_memcheck_finds_no_invalid_access_in_the_appender(tmp_path: Path) -> None:
    """FastAppender under memcheck: real files and memfs, sync never and always, stack and
    heap frames, bad arguments, a clock past 64 bits, failed writes; no invalid access and
    no error in an _encode frame (CPython itself is not memcheck-clean, as in
    test_speedups)."""
    run_memcheck(tmp_path, MEMCHECK_SCRIPT, ("_encode", "_appender"), timeout=290)


def test_a_clock_past_64_bits_is_refused_without_failing_the_log(tmp_path: Path) -> None:
    """The encoder's error, as on the general path (stamp, then encode_record raises before
    anything is written), and the log is not failed. (The Python fast path fails the log
    instead: its encode and write are one guarded step; and the general path keeps the bad
    stamp as its last one, so it refuses every later append too: the compiled one keeps the
    last stamp it could encode and goes on once the clock is sane again.)"""
    if not COMPILED:
        pytest.skip("segwal.format._encode is not built")
    big = [False]

    def clock() -> int:
        return 2**65 if big[0] else 1_700_000_000_000_000

    errors = {}
    for name in ("compiled", "general"):
        big[0] = False
        with _path(name), segwal.open(tmp_path / name, sync="never", clock=clock) as wal:
            wal.append(b"a")
            wal.append(b"b")
            big[0] = True
            with pytest.raises(ValueError) as info:
                wal.append(b"c")
            errors[name] = str(info.value)
            assert _fast_kind(wal) == name
            assert wal._appender._state.failure is None  # type: ignore[union-attr]
            big[0] = False
            if name == "compiled":
                assert wal.append(b"c") == 3
                assert wal.stats().appends == 3
    assert errors["compiled"] == errors["general"]
    assert "out of range" in errors["compiled"]


@pytest.mark.parametrize("reenter", ["rotate", "append", "close"])
def test_a_clock_that_reenters_the_log_never_writes_with_stale_state(
    tmp_path: Path, reenter: str
) -> None:
    """A custom clock runs Python code under the log's lock; when it rotates, appends or
    closes from inside, the append in progress must not write at the offset, with the LSN
    or through the descriptor it read before (the closed segment's descriptor number may
    already name the new segment). Every acknowledged record reads back once, in order."""
    path = tmp_path / "log"
    ticks = [1_700_000_000_000_000]
    trigger = [False]
    holder: list[segwal.Wal] = []
    nested: list[int] = []

    def clock() -> int:
        ticks[0] += 1
        if trigger[0]:
            trigger[0] = False
            wal = holder[0]
            if reenter == "rotate":
                wal.rotate()
            elif reenter == "append":
                nested.append(wal.append(b"nested"))
            else:
                wal.close()
        return ticks[0]

    wal = segwal.open(path, sync="never", clock=clock)
    holder.append(wal)
    acked = {wal.append(b"r%d" % i): b"r%d" % i for i in range(10)}
    trigger[0] = True
    try:
        acked[wal.append(b"X")] = b"X"
    except segwal.ClosedError:
        assert reenter == "close"
    if reenter != "close":
        for i in range(3):
            acked[wal.append(b"y%d" % i)] = b"y%d" % i
        wal.close()
    for lsn in nested:
        acked[lsn] = b"nested"
    with segwal.open(path, readonly=True) as view:
        got = {r.lsn: r.payload for r in view.replay()}
    assert got == acked
    assert segwal.verify(path).ok
