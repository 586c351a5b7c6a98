"""Dropping data safely: truncate_before, truncate_after, retention rules, holds, reader pins.

The acceptance list of the retention issue, through the public API: what each operation
deletes and reports, that nothing it dropped is ever returned again (also after a reopen and
after a crash at every step), that a crash leaves either the old log or the new one, never a
gap, and that retention explains what keeps each segment and reads no payload.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import segwal
from conftest import FakeClock, payload
from segwal.log.retention import Rules, decide
from segwal.testing import MemoryFileSystem

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_retention.py"
SIZE = 100  # payload bytes per record
PER_SEGMENT = 5  # records per sealed segment in the logs built here
STEP = 60.0  # seconds the fake clock moves per record


# -- helpers -----------------------------------------------------------------------------


def fill(
    wal: segwal.Wal,
    sealed: int,
    *,
    per_segment: int = PER_SEGMENT,
    tail: int = 2,
    clock: FakeClock | None = None,
) -> None:
    """Append ``sealed`` segments of ``per_segment`` records, each closed by rotate(), then
    ``tail`` records into the active segment; the clock moves STEP seconds per record."""

    def append() -> None:
        lsn = wal.next_lsn
        assert wal.append(payload(lsn, SIZE)) == lsn
        if clock is not None:
            clock.advance(STEP)

    for _ in range(sealed):
        for _ in range(per_segment):
            append()
        wal.rotate()
    for _ in range(tail):
        append()
    wal.sync()


def lsns(wal: segwal.Wal, **kw: int) -> list[int]:
    return [record.lsn for record in wal.replay(**kw)]


def check_contiguous(wal: segwal.Wal, first: int, last: int) -> None:
    """The log holds exactly ``first..last``, byte-exact, and says so."""
    if not wal.readonly:
        wal.sync()
    records = list(wal.replay())
    assert [r.lsn for r in records] == list(range(first, last + 1))
    for record in records:
        assert record.payload == payload(record.lsn, SIZE), record.lsn
    assert (wal.first_lsn, wal.last_lsn) == (first, last)


def listing(path: str | Path) -> dict[str, bytes]:
    """Every file of a log directory but LOCK, with its content."""
    return {
        name: (Path(path) / name).read_bytes()
        for name in sorted(os.listdir(path))
        if name != "LOCK"
    }


def seg_files(path: str | Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name.endswith(".wal"))


@pytest.fixture
def built(wal_dir: str, clock: FakeClock) -> str:
    """A closed log: 6 sealed segments of 5 records (LSNs 1..30) and 2 records (31..32) in
    the active segment, one record per minute of the fake clock."""
    with segwal.open(wal_dir, sync="never", clock=clock) as wal:
        fill(wal, 6, clock=clock)
        assert [s.first_lsn for s in wal.segments()] == [1, 6, 11, 16, 21, 26, 31]
        assert wal.last_lsn == 32
    return wal_dir


class FaultyFS:
    """A FileSystem that delegates to another and fails one chosen mutating call.

    Counts, once armed, the mutating calls (create, pwrite, truncate, sync, rename, unlink,
    sync_dir) that ``match`` accepts, and raises StorageError(EIO) on the ``nth`` one, as a
    disk or a dying process would stop the operation at that instant.
    """

    MUTATING = frozenset({"create", "pwrite", "truncate", "sync", "rename", "unlink", "sync_dir"})

    def __init__(self, inner: segwal.FileSystem) -> None:
        self.inner = inner
        self.nth = 0
        self.count = 0
        self.match: Callable[[str, str], bool] | None = None
        self.tripped: tuple[str, str] | None = None

    def arm(self, nth: int, match: Callable[[str, str], bool] | None = None) -> None:
        self.nth, self.count, self.match, self.tripped = nth, 0, match, None

    def hit(self, kind: str, what: str) -> None:
        if self.nth <= 0 or (self.match is not None and not self.match(kind, what)):
            return
        self.count += 1
        if self.count == self.nth:
            self.nth = 0
            self.tripped = (kind, what)
            raise segwal.StorageError(kind, what, OSError(errno.EIO, "injected fault"))

    def list_dir(self, path: str) -> list:  # type: ignore[type-arg]
        return self.inner.list_dir(path)

    def make_dir(self, path: str) -> bool:
        return self.inner.make_dir(path)

    def open_read(self, path: str) -> FaultyHandle:
        return FaultyHandle(self, self.inner.open_read(path))

    def open_write(self, path: str) -> FaultyHandle:
        return FaultyHandle(self, self.inner.open_write(path))

    def create(self, path: str) -> FaultyHandle:
        self.hit("create", path)
        return FaultyHandle(self, self.inner.create(path))

    def rename(self, src: str, dst: str) -> None:
        self.hit("rename", dst)
        self.inner.rename(src, dst)

    def unlink(self, path: str) -> None:
        self.hit("unlink", path)
        self.inner.unlink(path)

    def sync_dir(self, path: str, site: str) -> None:
        self.hit("sync_dir", site)
        self.inner.sync_dir(path, site)

    def lock(self, path: str, *, exclusive: bool) -> object:
        return self.inner.lock(path, exclusive=exclusive)


class FaultyHandle:
    def __init__(self, fs: FaultyFS, inner: object) -> None:
        self.fs = fs
        self.inner = inner

    @property
    def path(self) -> str:
        return self.inner.path  # type: ignore[attr-defined, no-any-return]

    def pwrite(self, data: bytes, offset: int) -> None:
        self.fs.hit("pwrite", self.path)
        self.inner.pwrite(data, offset)  # type: ignore[attr-defined]

    def pread(self, size: int, offset: int) -> bytes:
        return self.inner.pread(size, offset)  # type: ignore[attr-defined, no-any-return]

    def size(self) -> int:
        return self.inner.size()  # type: ignore[attr-defined, no-any-return]

    def truncate(self, size: int) -> None:
        self.fs.hit("truncate", self.path)
        self.inner.truncate(size)  # type: ignore[attr-defined]

    def sync(self, site: str) -> None:
        self.fs.hit("sync", site)
        self.inner.sync(site)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]


def is_segment_unlink(kind: str, what: str) -> bool:
    return kind == "unlink" and what.endswith(".wal")


# -- truncate_before ---------------------------------------------------------------------


def test_truncate_before_deletes_whole_sealed_segments_below(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        before = wal.segments()
        result = wal.truncate_before(13)
        gone = [s for s in before if s.last_lsn < 13]
        assert [s.first_lsn for s in gone] == [1, 6]
        assert result.segments_deleted == 2
        assert result.bytes_reclaimed == sum(s.size_bytes for s in gone) > 0
        assert (result.first_lsn, result.last_lsn) == (13, 32)
        for segment in gone:
            assert not os.path.exists(segment.path)
        # The segment holding LSN 13 stays whole; its records below 13 are hidden.
        assert seg_files(built)[0] == "00000000000000000011.wal"
        check_contiguous(wal, 13, 32)
        # Truncating at the first LSN again deletes nothing.
        assert wal.truncate_before(13).segments_deleted == 0


@pytest.mark.parametrize("reopen", ["same", "writer", "readonly"])
def test_records_below_are_never_returned_again(built: str, reopen: str) -> None:
    wal = segwal.open(built, sync="never")
    wal.truncate_before(13)
    if reopen != "same":
        wal.close()
        wal = segwal.open(built, sync="never", readonly=reopen == "readonly")
    with wal:
        for lsn in (1, 5, 11, 12):
            with pytest.raises(segwal.NotFoundError, match="now starts at LSN 13") as info:
                wal.read(lsn)
            assert info.value.first_lsn == 13 and info.value.lsn == lsn
        assert wal.read(13).payload == payload(13, SIZE)
        assert lsns(wal) == list(range(13, 33))
        assert lsns(wal, from_lsn=1)[:1] == [13]
        assert lsns(wal, from_lsn=11, to_lsn=14) == [13, 14]
        assert wal.first_lsn == 13
        assert wal.recovery.removed_obsolete == ()


def test_truncate_before_everything_then_numbering_continues(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        sizes = sum(s.size_bytes for s in wal.segments() if s.sealed)
        result = wal.truncate_before(33)
        assert result.segments_deleted == 6 and result.bytes_reclaimed == sizes
        assert (wal.first_lsn, wal.last_lsn) == (33, 32)
        assert lsns(wal) == []
        with pytest.raises(segwal.NotFoundError, match="now starts at LSN 33"):
            wal.read(32)
        assert len(seg_files(built)) == 1  # the active segment is never deleted
        assert wal.append(payload(33, SIZE)) == 33
    with segwal.open(built, sync="never") as wal:
        check_contiguous(wal, 33, 33)
        assert wal.append(payload(34, SIZE)) == 34
        check_contiguous(wal, 33, 34)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (5, segwal.NotFoundError),  # below the first LSN (11 after the first checkpoint)
        (34, segwal.NotFoundError),  # above last_lsn + 1
        (-1, segwal.NotFoundError),
        (0, segwal.NotFoundError),
        (10**30, segwal.NotFoundError),
        ("20", segwal.ConfigError),
        (20.0, segwal.ConfigError),
        (None, segwal.ConfigError),
        (True, segwal.ConfigError),
    ],
)
def test_truncate_before_bad_input_deletes_nothing(built: str, bad: object, error: type) -> None:
    with segwal.open(built, sync="never") as wal:
        wal.truncate_before(11)
        before = listing(built)
        with pytest.raises(error) as info:
            wal.truncate_before(bad)  # type: ignore[arg-type]
        message = str(info.value)
        if error is segwal.NotFoundError:
            assert "11..32" in message and "use 11..33" in message
        else:
            assert "integer" in message
        assert listing(built) == before
        # A refused call does not fail the log.
        assert wal.append(payload(33, SIZE)) == 33
        check_contiguous(wal, 11, 33)


def _copy_after_fault(built: str, tmp_path: Path, match: Callable[[str, str], bool], nth: int):  # type: ignore[no-untyped-def]
    """Run truncate_before(13) until the fault trips, copy the directory as the machine
    would have left it at that instant, and return the copy and what tripped."""
    fs = FaultyFS(segwal.OsFileSystem())
    wal = segwal.open(built, sync="never", filesystem=fs)
    fs.arm(nth, match)
    with pytest.raises(segwal.StorageError, match="injected fault"):
        wal.truncate_before(13)
    copy = tmp_path / f"copy-{nth}"
    shutil.copytree(built, copy)
    tripped = fs.tripped
    # The failed log refuses everything until reopened.
    with pytest.raises(segwal.WalFailedError):
        wal.append(b"x")
    wal.close()
    return copy, tripped


@pytest.mark.parametrize("nth", [1, 2])
def test_crash_after_meta_before_unlinks_leftovers_removed(
    built: str, tmp_path: Path, nth: int
) -> None:
    copy, tripped = _copy_after_fault(built, tmp_path, is_segment_unlink, nth)
    below = ["00000000000000000001.wal", "00000000000000000006.wal"]
    assert tripped is not None and tripped[1].endswith(below[nth - 1])
    leftovers = below[nth - 1 :]  # unlinks go oldest first; the nth one failed
    assert seg_files(copy)[: len(leftovers)] == leftovers
    with segwal.open(copy, sync="never") as wal:
        removed = sorted(os.path.basename(p) for p in wal.recovery.removed_obsolete)
        assert removed == leftovers
        check_contiguous(wal, 13, 32)
        assert seg_files(copy)[0] == "00000000000000000011.wal"
    with segwal.open(copy, sync="never") as wal:
        assert wal.recovery.removed_obsolete == ()  # removed for good
        check_contiguous(wal, 13, 32)


def test_crash_before_meta_is_stored_keeps_the_old_log(built: str, tmp_path: Path) -> None:
    copy, tripped = _copy_after_fault(built, tmp_path, lambda kind, what: kind == "rename", 1)
    assert tripped is not None and tripped[1].endswith("META")
    with segwal.open(copy, sync="never") as wal:
        # Nothing was promised yet: the old log, first LSN at or below the requested one.
        check_contiguous(wal, 1, 32)
        # The failed rename was undone by storing the old META again, so no META.tmp is
        # left behind; if that undo had failed too, recovery would remove it.
        assert all(p.endswith("META.tmp") for p in wal.recovery.removed_temp_files)
        assert wal.truncate_before(13).segments_deleted == 2


def test_crash_at_the_final_directory_fsync(built: str, tmp_path: Path) -> None:
    copy, tripped = _copy_after_fault(
        built, tmp_path, lambda kind, what: what == "retention.unlink", 1
    )
    assert tripped == ("sync_dir", "retention.unlink")
    with segwal.open(copy, sync="never") as wal:
        assert wal.recovery.removed_obsolete == ()
        check_contiguous(wal, 13, 32)


def memory_log(sealed: int = 4) -> tuple[MemoryFileSystem, int]:
    """A closed, fully durable log in memory; returns it and its last LSN."""
    fs = MemoryFileSystem()
    with segwal.open("/wal", sync="always", filesystem=fs) as wal:
        fill(wal, sealed)
        last = wal.last_lsn
    return fs, last


def crash_images(fs: MemoryFileSystem, start: int, limit: int = 6) -> Iterator[MemoryFileSystem]:
    """Disks a power loss could leave at every operation from ``start`` on."""
    for k, state in fs.replays():
        if k >= start:
            yield from state.crash_states(seed=k, limit=limit)


def test_truncate_before_power_loss_at_every_step() -> None:
    fs, last = memory_log()
    with segwal.open("/wal", sync="always", filesystem=fs) as wal:
        start = fs.op_count
        wal.truncate_before(13)
    seen = set()
    for image in crash_images(fs, start):
        with segwal.open("/wal", sync="never", filesystem=image) as wal:
            first = wal.first_lsn
            assert first in (1, 13), image.crash_info
            check_contiguous(wal, first, last)
            seen.add(first)
            if first == 13:
                assert all(p.endswith(".wal") for p in wal.recovery.removed_obsolete)
            assert wal.append(payload(last + 1, SIZE)) == last + 1
    assert seen == {1, 13}


# -- truncate_after ----------------------------------------------------------------------


def test_truncate_after_next_append_gets_lsn_plus_one(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        result = wal.truncate_after(31)
        assert result.segments_deleted == 0 and result.bytes_reclaimed > 0
        assert (result.first_lsn, result.last_lsn) == (1, 31)
        assert wal.append(payload(32, SIZE)) == 32
        check_contiguous(wal, 1, 32)
        assert wal.truncate_after(32).bytes_reclaimed == 0  # at the last LSN: nothing to do
    with segwal.open(built, sync="never") as wal:
        assert wal.recovery.rewound_to is None
        check_contiguous(wal, 1, 32)
    assert segwal.verify(built).ok


def test_truncate_after_into_a_sealed_segment(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        before = {s.first_lsn: s for s in wal.segments()}
        result = wal.truncate_after(13)
        assert result.segments_deleted == 4  # 16, 21, 26 and the active 31
        assert result.bytes_reclaimed > sum(before[k].size_bytes for k in (16, 21, 26, 31))
        assert seg_files(built)[-1] == "00000000000000000011.wal"
        assert [s.sealed for s in wal.segments()] == [True, True, False]
        check_contiguous(wal, 1, 13)
        assert wal.append(payload(14, SIZE)) == 14
        wal.rotate()
        assert wal.append(payload(15, SIZE)) == 15
    with segwal.open(built, sync="never") as wal:
        check_contiguous(wal, 1, 15)
    assert segwal.verify(built).ok


def test_truncate_after_into_the_middle_of_a_batch(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        fill(wal, 1, tail=0)
        batch = [payload(lsn, SIZE) for lsn in range(6, 13)]
        assert wal.append_batch(batch, type=7) == range(6, 13)  # one frame of 7 records
        wal.sync()
        stamp = wal.read(9).timestamp_us
        wal.append(payload(13, SIZE))
        wal.truncate_after(9)  # keeps 6..9 of the batch: the frame is re-encoded
        kept = [wal.read(lsn) for lsn in range(6, 10)]
        assert [(r.type, r.timestamp_us) for r in kept] == [(7, stamp)] * 4
        with pytest.raises(segwal.NotFoundError, match="past the end"):
            wal.read(10)
        assert wal.append(payload(10, SIZE)) == 10
        check_contiguous(wal, 1, 10)
    with segwal.open(wal_dir, sync="never") as wal:
        check_contiguous(wal, 1, 10)
        assert wal.read(9).type == 7
    assert segwal.verify(wal_dir).ok


@pytest.mark.parametrize("checkpoint", [11, 13])  # at a segment boundary, inside a segment
def test_truncate_after_to_before_the_first_lsn_empties_the_log(
    built: str, checkpoint: int
) -> None:
    with segwal.open(built, sync="never") as wal:
        wal.truncate_before(checkpoint)
        result = wal.truncate_after(checkpoint - 1)
        assert (result.first_lsn, result.last_lsn) == (checkpoint, checkpoint - 1)
        assert lsns(wal) == []
        with pytest.raises(segwal.NotFoundError):
            wal.read(checkpoint - 1)
        assert wal.append(payload(checkpoint, SIZE)) == checkpoint
        check_contiguous(wal, checkpoint, checkpoint)
    with segwal.open(built, sync="never") as wal:
        check_contiguous(wal, checkpoint, checkpoint)
        assert wal.append(payload(checkpoint + 1, SIZE)) == checkpoint + 1
    assert segwal.verify(built).ok


def test_truncate_after_to_zero_on_a_fresh_log(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        fill(wal, 2)
        wal.truncate_after(0)
        assert (wal.first_lsn, wal.last_lsn) == (1, 0)
        assert wal.append(payload(1, SIZE)) == 1
    with segwal.open(wal_dir, sync="never") as wal:
        check_contiguous(wal, 1, 1)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (9, segwal.NotFoundError),
        (33, segwal.NotFoundError),
        (-1, segwal.NotFoundError),
        ("3", segwal.ConfigError),
        (3.0, segwal.ConfigError),
        (False, segwal.ConfigError),
    ],
)
def test_truncate_after_bad_input_changes_nothing(built: str, bad: object, error: type) -> None:
    with segwal.open(built, sync="never") as wal:
        wal.truncate_before(11)
        before = listing(built)
        with pytest.raises(error):
            wal.truncate_after(bad)  # type: ignore[arg-type]
        assert listing(built) == before
        check_contiguous(wal, 11, 32)


# Where truncate_after rewinds to in the log `built` (LSNs 1..32, sealed 1..30).
REWINDS = {
    "active segment": 31,
    "end of a sealed segment": 20,
    "middle of a sealed segment": 13,
    "first_lsn - 1": 0,
}


@pytest.mark.parametrize("where", list(REWINDS))
def test_truncate_after_fault_at_every_step_leaves_old_or_rewound(
    built: str, tmp_path: Path, where: str
) -> None:
    target = REWINDS[where]
    template = tmp_path / "template"
    shutil.copytree(built, template)
    outcomes = set()
    nth = 0
    while True:
        nth += 1
        assert nth < 100, "truncate_after never completed"
        directory = tmp_path / f"n{nth}"
        shutil.copytree(template, directory)
        fs = FaultyFS(segwal.OsFileSystem())
        wal = segwal.open(directory, sync="never", filesystem=fs)
        fs.arm(nth)
        try:
            wal.truncate_after(target)
        except segwal.StorageError as exc:
            assert fs.tripped is not None, exc
            done = False
        else:
            done = True
        wal.close()
        with segwal.open(directory, sync="never") as wal:
            last = wal.last_lsn
            assert last in (32, target), f"fault at {fs.tripped}: last LSN {last}"
            check_contiguous(wal, 1, last)
            rewound_to = wal.recovery.rewound_to
            if rewound_to is not None:
                assert rewound_to == target and last == target
            if done:
                assert last == target and rewound_to is None
            outcomes.add((last, rewound_to))
            assert wal.append(payload(last + 1, SIZE)) == last + 1
        assert segwal.verify(directory).ok
        shutil.rmtree(directory)
        if done:
            break
    assert (32, None) in outcomes  # failed before the intent was stored
    assert (target, target) in outcomes  # recovery finished an interrupted rewind
    assert nth > 3


def test_truncate_after_power_loss_at_every_step() -> None:
    fs, last = memory_log()
    target = 8  # inside the second sealed segment: unlinks, a rewrite, a new tail
    with segwal.open("/wal", sync="always", filesystem=fs) as wal:
        start = fs.op_count
        wal.truncate_after(target)
    outcomes = set()
    for image in crash_images(fs, start, limit=4):
        with segwal.open("/wal", sync="never", filesystem=image) as wal:
            got = wal.last_lsn
            assert got in (last, target), image.crash_info
            check_contiguous(wal, 1, got)
            if wal.recovery.rewound_to is not None:
                assert got == target
            outcomes.add(got)
    assert outcomes == {last, target}


# -- retention rules ---------------------------------------------------------------------


def decisions(plan: list[segwal.Decision]) -> list[tuple[int, bool, str | None, str | None]]:
    return [(d.segment.first_lsn, d.delete, d.rule, d.kept_by) for d in plan]


def test_max_age_with_an_injected_clock(built: str, clock: FakeClock) -> None:
    # The records of segment k (0-based) are stamped 5k..5k+4 minutes after the first one;
    # a segment is old when its newest record is: segment 0 at minute 4 + 10.
    clock.advance(-32 * STEP + 13 * STEP)  # "now" is minute 13: nothing is old yet
    with segwal.open(built, retention_max_age=10 * STEP - 1, clock=clock) as wal:
        plan = wal.retention_plan()
        assert decisions(plan)[:2] == [(1, False, None, None), (6, False, None, None)]
        clock.advance(5 * STEP)  # minute 18: segment 0 (newest record at minute 4) is old
        assert decisions(wal.retention_plan())[:2] == [
            (1, True, "max_age", None),
            (6, False, None, None),
        ]
        clock.advance(10 * STEP)  # minute 28: segments 0..2 (newest at 4, 9, 14) are old
        result = wal.apply_retention()
        assert [(d.first_lsn, d.rule) for d in result.deleted] == [
            (1, "max_age"),
            (6, "max_age"),
            (11, "max_age"),
        ]
        assert result.first_lsn == wal.first_lsn == 16
        assert result.bytes_reclaimed == sum(d.size_bytes for d in result.deleted)
        assert not any(d.deferred for d in result.deleted)
        check_contiguous(wal, 16, 32)


def test_max_bytes_deletes_oldest_first(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        sizes = [s.size_bytes for s in wal.segments()]
    limit = sum(sizes) - sizes[0] - sizes[1] - 1  # two are not enough: three must go
    with segwal.open(built, retention_max_bytes=limit) as wal:
        plan = wal.retention_plan()
        assert [d.delete for d in plan] == [True, True, True, False, False, False, False]
        assert {d.rule for d in plan if d.delete} == {"max_bytes"}
        result = wal.apply_retention()
        assert [d.first_lsn for d in result.deleted] == [1, 6, 11]
        assert sum(s.size_bytes for s in wal.segments()) <= limit
        assert wal.apply_retention().deleted == ()  # under the limit now
        check_contiguous(wal, 16, 32)


def test_min_segments_keeps_the_newest_sealed(built: str, clock: FakeClock) -> None:
    clock.advance(10**6)
    with segwal.open(built, retention_max_age=60, retention_min_segments=4, clock=clock) as wal:
        plan = decisions(wal.retention_plan())
        assert plan[:2] == [(1, True, "max_age", None), (6, True, "max_age", None)]
        assert plan[2:6] == [(k, False, "max_age", "min_segments=4") for k in (11, 16, 21, 26)]
        assert plan[6] == (31, False, None, "active segment")
        assert [d.first_lsn for d in wal.apply_retention().deleted] == [1, 6]
        assert sum(s.sealed for s in wal.segments()) == 4


def test_prune_through_timestamp(built: str, clock: FakeClock) -> None:
    with segwal.open(built, clock=clock) as wal:
        stamps = [s.max_timestamp_us for s in wal.segments()]
        result = wal.prune_through(stamps[2])  # through the last record of the third segment
        assert [(d.first_lsn, d.rule) for d in result.deleted] == [
            (1, "prune_through"),
            (6, "prune_through"),
            (11, "prune_through"),
        ]
        assert wal.prune_through(stamps[3] - 1).deleted == ()  # 16..20 has a later record
        assert wal.prune_through(10**18).deleted[-1].first_lsn == 26  # never the active one
        check_contiguous(wal, 31, 32)
        with pytest.raises(segwal.ConfigError):
            wal.prune_through("now")  # type: ignore[arg-type]


def test_rules_combined_each_deletion_names_its_rule(built: str, clock: FakeClock) -> None:
    with segwal.open(built, sync="never") as wal:
        sizes = [s.size_bytes for s in wal.segments()]
    clock.advance(-32 * STEP + 17 * STEP)  # now: 17 minutes: only 1..5 is over 10 min old
    limit = sum(sizes[3:]) + 1  # bytes want 1, 6 and 11 gone
    with segwal.open(
        built,
        retention_max_age=10 * STEP,
        retention_max_bytes=limit,
        retention_min_segments=4,
        clock=clock,
    ) as wal:
        plan = decisions(wal.retention_plan())
        assert plan[:3] == [
            (1, True, "max_age", None),
            (6, True, "max_bytes", None),
            (11, False, "max_bytes", "min_segments=4"),
        ]
        result = wal.apply_retention()
        assert [(d.first_lsn, d.rule) for d in result.deleted] == [(1, "max_age"), (6, "max_bytes")]
        check_contiguous(wal, 11, 32)


def test_retention_runs_after_each_rotation(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never", retention_max_bytes=3000) as wal:
        for _ in range(10):
            fill(wal, 1, tail=0)
            assert sum(s.size_bytes for s in wal.segments()) <= 3000 + 1000
        first = wal.first_lsn
        assert first > 1
        check_contiguous(wal, first, 50)


def test_active_segment_is_never_deleted(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, sync="never", clock=clock) as wal:
        fill(wal, 0, tail=40)  # one active segment with everything in it
    clock.advance(10**6)
    with segwal.open(wal_dir, retention_max_age=1, retention_max_bytes=1, clock=clock) as wal:
        assert decisions(wal.retention_plan()) == [(1, False, None, "active segment")]
        assert wal.apply_retention().deleted == ()
        assert wal.prune_through(10**18).deleted == ()
        check_contiguous(wal, 1, 40)


def test_plan_explains_what_keeps_each_segment(built: str, clock: FakeClock) -> None:
    clock.advance(10**6)
    with segwal.open(built, clock=clock) as wal:
        wal.hold("backup", 14)
    with segwal.open(built, retention_max_age=60, retention_min_segments=1, clock=clock) as wal:
        plan = decisions(wal.retention_plan())
    hold = "hold 'backup' at LSN 14"
    assert plan == [
        (1, True, "max_age", None),
        (6, True, "max_age", None),
        (11, False, "max_age", hold),
        (16, False, "max_age", hold),  # kept behind the hold: no gap
        (21, False, "max_age", hold),
        (26, False, "max_age", hold),
        (31, False, None, "active segment"),
    ]


def test_plan_older_segment_stays() -> None:
    # Timestamps never go back within one log, so this arises from the pure rules only.
    def info(first: int, max_ts: int, sealed: bool = True) -> segwal.SegmentInfo:
        return segwal.SegmentInfo(
            path=f"/{first}",
            sequence=first,
            first_lsn=first,
            last_lsn=first + 4,
            size_bytes=100,
            sealed=sealed,
            created_us=0,
            max_timestamp_us=max_ts,
        )

    plan = decide(
        [info(1, 10), info(6, 100), info(11, 20), info(16, 0, sealed=False)],
        Rules(max_age_us=50),
        now_us=120,
        holds={},
    )
    assert decisions(plan) == [
        (1, True, "max_age", None),
        (6, False, None, None),
        (11, False, "max_age", "older segment 6..10 stays"),
        (16, False, None, "active segment"),
    ]


def test_readonly_refuses_retention(built: str) -> None:
    with segwal.open(built, readonly=True, retention_max_bytes=1) as wal:
        with pytest.raises(segwal.ReadOnlyError):
            wal.apply_retention()
        with pytest.raises(segwal.ReadOnlyError):
            wal.truncate_before(2)
        with pytest.raises(segwal.ReadOnlyError):
            wal.hold("x", 2)


def test_readonly_plan_matches_the_writer_plan(built: str) -> None:
    with segwal.open(built, sync="never") as wal:
        sizes = [s.size_bytes for s in wal.segments()]
    limit = sum(sizes) - sizes[0] - sizes[1] - 1
    with segwal.open(built, readonly=True, retention_max_bytes=limit) as wal:
        readonly = decisions(wal.retention_plan())
    with segwal.open(built, retention_max_bytes=limit) as wal:
        writer = decisions(wal.retention_plan())
    assert readonly == writer


# -- holds -------------------------------------------------------------------------------


def test_holds_persist_and_block_every_rule(built: str, clock: FakeClock) -> None:
    with segwal.open(built, clock=clock) as wal:
        wal.hold("backup", 14)
        wal.hold("replica:eu-1", 22)
        assert wal.holds() == {"backup": 14, "replica:eu-1": 22}
    clock.advance(10**6)
    with segwal.open(built, clock=clock, retention_max_age=60, retention_max_bytes=1) as wal:
        assert wal.holds() == {"backup": 14, "replica:eu-1": 22}
        result = wal.apply_retention()
        assert [d.first_lsn for d in result.deleted] == [1, 6]  # 11..15 holds LSN 14
        assert wal.prune_through(10**18).deleted == ()
        with pytest.raises(segwal.HoldError, match="hold 'backup' keeps LSN 14") as info:
            wal.truncate_before(15)
        assert (info.value.name, info.value.hold_lsn, info.value.lsn) == ("backup", 14, 15)
        files = seg_files(built)
        assert wal.truncate_before(14).segments_deleted == 0  # at the hold: allowed
        assert seg_files(built) == files
        assert wal.release("backup") is True
        assert wal.release("backup") is False
        assert [d.first_lsn for d in wal.apply_retention().deleted] == [11, 16]
        with pytest.raises(segwal.HoldError, match="replica:eu-1"):
            wal.truncate_before(23)
    with segwal.open(built) as wal:
        assert wal.holds() == {"replica:eu-1": 22}
        assert wal.release("replica:eu-1") is True
    with segwal.open(built, readonly=True) as wal:
        assert wal.holds() == {}
        check_contiguous(wal, 21, 32)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "two words", "a/b", "-leading", ".hidden", "ünicode", "tab\t", 7, None],
)
def test_bad_hold_names_store_nothing(built: str, name: object) -> None:
    with segwal.open(built) as wal:
        before = listing(built)
        with pytest.raises(segwal.ConfigError, match="invalid hold name"):
            wal.hold(name, 5)  # type: ignore[arg-type]
        with pytest.raises(segwal.ConfigError):
            wal.release(name)  # type: ignore[arg-type]
        assert wal.holds() == {}
        assert listing(built) == before
    with segwal.open(built) as wal:
        assert wal.holds() == {}


def test_hold_name_limits_and_lsn_range(built: str) -> None:
    longest = ("a" + "._:@-9Z" * 19)[:128]
    assert len(longest) == 128
    with segwal.open(built) as wal:
        wal.hold(longest, 1)
        wal.hold("next", 33)  # last_lsn + 1 is allowed: keeps what comes next
        with pytest.raises(segwal.NotFoundError):
            wal.hold("past", 34)
        with pytest.raises(segwal.ConfigError):
            wal.hold("str", "5")  # type: ignore[arg-type]
    with segwal.open(built) as wal:
        assert wal.holds() == {longest: 1, "next": 33}


# -- live readers ------------------------------------------------------------------------


def test_retention_cannot_delete_under_a_live_reader(built: str, clock: FakeClock) -> None:
    with segwal.open(built, clock=clock, retention_max_age=60) as wal:
        first_segment = wal.segments()[0].path
        reader = wal.replay()
        got = [next(reader) for _ in range(3)]  # reading 00000000000000000001.wal
        clock.advance(10**6)
        result = wal.apply_retention()
        assert [d.first_lsn for d in result.deleted] == [1, 6, 11, 16, 21, 26]
        by_lsn = {d.first_lsn: d for d in result.deleted}
        assert by_lsn[1].deferred is True and by_lsn[1].rule == "max_age"
        assert os.path.exists(first_segment)  # still being read
        assert wal.first_lsn == 31
        with pytest.raises(segwal.NotFoundError):
            wal.read(2)  # new readers already see the new first LSN
        got += list(reader)
        assert [r.lsn for r in got] == list(range(1, 33))
        assert all(r.payload == payload(r.lsn, SIZE) for r in got)
        assert not os.path.exists(first_segment)  # gone once its reader was done
        assert seg_files(built) == ["00000000000000000031.wal"]


def test_a_reader_closed_early_lets_the_deferred_deletion_happen(
    built: str, clock: FakeClock
) -> None:
    with segwal.open(built, clock=clock, retention_max_age=60) as wal:
        reader = wal.replay()
        next(reader)
        clock.advance(10**6)
        assert all(d.deferred for d in wal.apply_retention().deleted)
        del reader  # replay() hands out a plain iterator: dropping it lets go of its pins
        assert seg_files(built) == ["00000000000000000031.wal"]


def test_deferred_file_left_by_a_close_is_removed_at_the_next_open(
    built: str, clock: FakeClock
) -> None:
    wal = segwal.open(built, clock=clock, retention_max_age=60)
    reader = wal.replay()
    next(reader)
    clock.advance(10**6)
    wal.apply_retention()
    wal.close()  # the reader never finished
    del reader
    with segwal.open(built) as wal:
        assert len(wal.recovery.removed_obsolete) == 6
        check_contiguous(wal, 31, 32)
        assert seg_files(built) == ["00000000000000000031.wal"]


def test_reader_across_a_rewind_falls_behind_not_corruption(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        fill(wal, 2, tail=2)  # 1..5 and 6..10 sealed, 11..12 active
        reader = wal.replay()
        got = [next(reader).lsn]
        wal.truncate_after(5)  # deletes 6.wal and 11.wal; the next segment is 6.wal again
        for lsn in range(6, 13):
            wal.append(b"rewritten %d" % lsn)
        with pytest.raises(segwal.ReaderFellBehindError):
            for record in reader:
                got.append(record.lsn)
        assert got == [1, 2, 3, 4, 5]  # the segment already open reads to its end


def test_apply_retention_power_loss_at_every_step() -> None:
    clock = FakeClock()
    fs = MemoryFileSystem()
    with segwal.open("/wal", sync="always", filesystem=fs, clock=clock) as wal:
        fill(wal, 4, clock=clock)
        last = wal.last_lsn
    clock.advance(10**6)
    with segwal.open(
        "/wal", filesystem=fs, clock=clock, retention_max_age=60, retention_min_segments=1
    ) as wal:
        start = fs.op_count
        assert wal.apply_retention().first_lsn == 16
    seen = set()
    for image in crash_images(fs, start):
        with segwal.open("/wal", sync="never", filesystem=image) as wal:
            assert wal.first_lsn in (1, 16), image.crash_info
            check_contiguous(wal, wal.first_lsn, last)
            seen.add(wal.first_lsn)
    assert seen == {1, 16}


# -- the benchmark's quick mode ----------------------------------------------------------


@pytest.mark.timeout(240)
def test_bench_quick_reads_no_payload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--dir", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    phases = {p["phase"]: p for p in data["phases"]}
    assert data["segments"] == 1000
    for name in ("retention_plan", "apply_retention"):
        assert phases[name]["preads"] == 0 and phases[name]["pread_bytes"] == 0
    assert data["deleted"] > 800
    assert phases["apply_retention"]["unlinks"] >= data["deleted"]
    assert "retention_plan" in proc.stdout  # the table
