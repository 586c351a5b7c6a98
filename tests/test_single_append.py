"""The single-append fast path (log/appender.py): the same files, stats and errors as the
general path, on real files (the compiled ``write_record``) and in memory (encode, then the
seam's ``pwrite``).

The general path is forced by making no writer eligible (``Appender._eligible`` patched to
refuse): the two runs must then leave byte-identical segments, so every field the fast path
writes or skips shows up as a difference.
"""

from __future__ import annotations

import errno
import itertools
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock
from segwal.errors import ForkedError, StorageError, WalFailedError
from segwal.format import encoder
from segwal.log import appender as appender_module
from segwal.log.appender import Appender
from segwal.testing import MemoryFileSystem

FIXED_LOG_ID = uuid.UUID(int=0x5E6A1_0000_0000_0000_0000_0000_0099)


def _never_eligible(self: Appender, writer: Any) -> None:
    self._fast_writer = appender_module._NOBODY


def fast_writer(appender: Appender | None) -> Any:
    """The writer the fast path may append to, compiled (FastAppender) or Python; None."""
    assert appender is not None
    if appender._fast is not None:
        return appender._fast.writer
    return None if appender._fast_writer is appender_module._NOBODY else appender._fast_writer


def _workload(path: str, clock: FakeClock, sync: str) -> tuple[int, ...]:
    """Single appends of every size class around rotation, types, a clock that steps back,
    a batch in between; returns the stats that must agree."""
    with segwal.open(path, sync=sync, clock=clock, segment_bytes=8192) as wal:
        for i in range(300):
            size = (i * 37) % 700
            wal.append(bytes([i % 251]) * size, type=i % 5)
            if i % 50 == 49:
                clock.advance(-0.5)  # stamps never decrease, on either path
            clock.advance(0.001)
            if i == 120:
                wal.append_batch([b"batch"] * 3, type=9)
        wal.append(bytearray(b"mutable"), type=1)  # not bytes: the general path
        wal.append(b"x" * 3000)
        stats = wal.stats()
        return (
            stats.appends,
            stats.records,
            stats.payload_bytes,
            stats.written_bytes,
            stats.writes,
            stats.segments,
            stats.last_lsn,
            sum(stats.rotations.values()),
        )


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(root.iterdir())
        if p.is_file() and p.name not in ("LOCK",)
    }


@pytest.mark.parametrize("sync", ["never", "always"])
def test_fast_and_general_paths_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: str
) -> None:
    monkeypatch.setattr(uuid, "uuid4", lambda: FIXED_LOG_ID)
    fast = _workload(str(tmp_path / "fast"), FakeClock(), sync)
    taken = Appender._eligible
    monkeypatch.setattr(Appender, "_eligible", _never_eligible)
    general = _workload(str(tmp_path / "general"), FakeClock(), sync)
    monkeypatch.setattr(Appender, "_eligible", taken)
    assert fast == general
    assert fast[5] > 3  # it rotated at the size limit, several times
    fast_files, general_files = _files(tmp_path / "fast"), _files(tmp_path / "general")
    assert fast_files.keys() == general_files.keys()
    for name in fast_files:
        assert fast_files[name] == general_files[name], name
    with segwal.open(tmp_path / "fast", readonly=True) as wal:
        records = list(wal.replay())
    assert [r.lsn for r in records] == list(range(1, 306))
    assert all(b.timestamp_us >= a.timestamp_us for a, b in itertools.pairwise(records))


def test_the_fast_path_is_taken(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", sync="never") as wal:
        wal.append(b"first")  # a segment's first record goes the general way
        appender = wal._appender
        assert appender is not None
        writer = appender._state.writer
        assert fast_writer(appender) is writer
        # Compiled: the whole append in C; pure: the Python path, encode then pwrite.
        assert (appender._fast is not None) == (encoder.write_record is not None)
        assert appender._fast is not None or appender._fast_fd == -1
        before = wal.stats().writes
        for i in range(10):
            wal.append(b"r%d" % i)
        assert wal.stats().writes == before + 10  # one write per append
        assert appender._state.writer is writer
        wal.rotate()
        wal.append(b"after")
        assert fast_writer(appender) not in (None, writer)  # a new writer is approved anew
        wal.sync()
        assert wal.read(11).payload == b"r9"


def test_buffered_and_compressed_logs_take_the_general_path(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "buffered", sync="never", buffer_bytes=4096) as wal:
        for _ in range(3):
            wal.append(b"x")
        assert fast_writer(wal._appender) is None
    with segwal.open(tmp_path / "aged", sync="never", max_segment_age=3600.0) as wal:
        for _ in range(3):
            wal.append(b"x")
        assert fast_writer(wal._appender) is None


def test_bad_arguments_get_the_general_paths_errors(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", sync="never", max_record_bytes=100) as wal:
        wal.append(b"a")
        wal.append(b"b")
        with pytest.raises(segwal.RecordTooLargeError):
            wal.append(b"x" * 101)
        with pytest.raises((TypeError, ValueError)):
            wal.append(b"x", type=1 << 16)
        with pytest.raises((TypeError, ValueError)):
            wal.append(b"x", type=-1)
        with pytest.raises(TypeError):
            wal.append("text")  # type: ignore[arg-type]
        with pytest.raises(segwal.ArgumentTypeError):  # a bool is no record type
            wal.append(b"x", type=True)
        assert wal.append(b"c", type=7) == 3
        assert wal.last_lsn == 3
    with pytest.raises(segwal.ClosedError):
        wal.append(b"late")


def test_a_failed_write_on_a_real_file_fails_the_log(tmp_path: Path) -> None:
    """ENOSPC from the compiled write (the segment's descriptor pointed at /dev/full): a
    StorageError naming the file, then the log refuses every append."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    wal = segwal.open(tmp_path / "log", sync="never")
    wal.append(b"a")
    wal.append(b"b")
    appender = wal._appender
    assert appender is not None
    writer = appender._state.writer
    assert writer is not None
    fd = writer.handle.fd  # type: ignore[attr-defined]
    saved = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, fd)
        with pytest.raises(StorageError) as info:
            wal.append(b"c")
        assert info.value.errno == errno.ENOSPC
        assert (info.value.op, info.value.path) == ("write", writer.path)
        with pytest.raises(WalFailedError):
            wal.append(b"d")
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(full)
        wal.close()  # a failed log closes without another barrier
    with segwal.open(tmp_path / "log", sync="never") as wal:
        assert [r.payload for r in wal.replay()] == [b"a", b"b"]


def test_a_failed_write_in_memory_fails_the_log() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, sync="never")
    wal.append(b"a")
    wal.append(b"b")
    fs.fail("write", nth=1, error=errno.EIO)
    with pytest.raises(StorageError):
        wal.append(b"c")
    with pytest.raises(WalFailedError):
        wal.append(b"d")
    wal.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_cannot_append_on_the_fast_path(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", sync="never") as wal:
        wal.append(b"a")
        wal.append(b"b")
        pid = os.fork()
        if pid == 0:
            try:
                wal.append(b"child")
            except ForkedError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert wal.append(b"c") == 3


def test_direct_io_logs_go_fast_only_when_compiled(tmp_path: Path) -> None:
    """Their single appends write whole aligned blocks: the compiled fast path does that
    itself (format/_direct.c), the Python fast path leaves them to SegmentWriter.write,
    never a bare pwrite. Every record across a rotation reads back, and the files hold what
    a reopen verifies (tests/test_fast_direct.py compares the two paths' bytes)."""
    path = tmp_path / "log"
    payloads = [bytes([i % 251]) * 100 for i in range(3000)]
    with segwal.open(path, sync="never", segment_bytes=1 << 18, direct_io=True) as wal:
        appender = wal._appender
        for p in payloads:
            wal.append(p)
        assert appender is not None
        fast, _ = appender.tally()
        if appender._fast is not None:
            assert fast_writer(appender) is wal._state.writer
            assert fast > 0.99 * len(payloads)  # only each segment's first
        else:
            assert fast_writer(appender) is None and fast == 0
        assert wal.stats().segments > 1
    with segwal.open(path, readonly=True) as view:
        assert [r.payload for r in view.replay()] == payloads
    assert segwal.verify(path).ok


def test_preallocated_logs_go_fast_within_the_allocation(tmp_path: Path) -> None:
    """A preallocated segment's single appends take the fast path while the frame ends
    within the space allocated; the one that would pass it takes SegmentWriter.write,
    which allocates the next step (never over written frames). Across several steps and
    rotations every record reads back and the files verify."""
    path = tmp_path / "log"
    payloads = [bytes([i % 251]) * 100 for i in range(20000)]
    with segwal.open(path, sync="never", segment_bytes=2 << 20, preallocate=True) as wal:
        appender = wal._appender
        assert appender is not None
        for p in payloads:
            wal.append(p)
            # Never past the allocation: a fast append there would grow the file without
            # the step's allocation (content alone would not show it).
            writer = wal._state.writer
            assert writer is not None and writer.offset <= writer.allocated
            assert os.fstat(writer.handle.fd).st_size == writer.allocated  # type: ignore[attr-defined]
        assert fast_writer(appender) is not None
        fast, _ = appender.tally()
        assert fast > 0.99 * len(payloads)  # only each segment's first, and each step's
        assert wal.stats().segments > 1
    with segwal.open(path, readonly=True) as view:
        assert [r.payload for r in view.replay()] == payloads
    assert segwal.verify(path).ok
